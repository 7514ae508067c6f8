//! stackwarden keeps a self-hosted Grafana observability stack on AWS exactly as declared.
//!
//! The map, top to bottom (arrows point down only):
//! - [`cli`]: the `stackwarden` commands; the only place errors become exit codes.
//! - [`engine`]: observe → diff → plan → apply across providers; modes enforced here.
//! - [`manifest`]: YAML files + environment values → validated [`model::Desired`], every
//!   error with file:line:col, field path and fix; and where the backends' shipped configs
//!   put their data in the bucket (`manifest::backends`, what the host policy grants them).
//! - [`grafana`]: the dashboards, datasources and alerting the manifests ship, checked against
//!   the series catalogue before anything reaches the host.
//! - [`policy`]: the security rules, run on desired state (validate) and on live state.
//! - [`provider`]: one trait, one implementation per world (AWS, Docker, host files).
//! - [`reconcile`]: the daemon's loop: triggers, passes, backoff, the stack's lease.
//! - [`source`]: signed delivery through the stack's bucket: bundle, pointer, publish,
//!   fetch and verify, and the status snapshot read from anywhere.
//! - [`server`]: HTTP: status JSON, health, metrics and the page; reads snapshots only.
//! - [`status`]: the daemon's status as data: conditions, audit trail, metrics.
//! - [`report`]: a plan as a Markdown job summary or a SARIF log for code scanning.
//! - [`plan`]: the plan as data: changes, conditions, violations.
//! - [`model`]: the resource kinds; plain data.
#![deny(unsafe_code)]

pub mod alerts;
pub mod bootstrap;
pub mod cli;
pub mod engine;
pub mod grafana;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod policy;
pub mod provider;
pub mod reconcile;
pub mod report;
pub mod server;
pub mod source;
pub mod status;
