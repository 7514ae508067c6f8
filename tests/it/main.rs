//! stackwarden's integration tests: one binary, one module per area. They talk to real
//! servers (moto, dockerd) the way users' runs do.
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod alertmanager;
mod alerts;
mod architecture;
mod aws;
mod aws_alerts;
mod aws_ec2;
mod aws_env;
mod aws_fields;
mod backend_storage;
mod bootstrap;
mod check_permissions;
mod cli;
mod daemon;
mod delivery;
mod faults;
mod golden;
mod grafana;
mod handoff;
mod host;
mod lease;
mod local_world;
mod manifests;
mod own_container;
mod partial;
mod permissions;
mod receivers;
mod report;
mod secrets;
mod source;
mod support;
