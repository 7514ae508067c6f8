//! Golden files for what users read: the plan's text and JSON and the `/status` body for one
//! fixed scenario over the shipped manifests. A change to any of them shows up as a reviewed
//! diff of `tests/golden/`; `STACKWARDEN_UPDATE_GOLDEN=1 cargo test --test it golden`
//! rewrites them after a deliberate change.

use stackwarden::model::{Kind, ResourceId};
use stackwarden::plan::{
    Action, BlockReason, Blocked, Cause, Change, ErrorClass, FieldChange, Plan, Problem,
    ProviderFailure, Unobserved, Violation, World,
};
use stackwarden::status::{PassRecord, PassResult, PassSummary, Status, Timestamp, Trigger};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `actual` with the golden file `name`, or rewrites it when asked to.
fn golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("STACKWARDEN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (STACKWARDEN_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    if want != actual {
        let first = want
            .lines()
            .zip(actual.lines())
            .position(|(w, a)| w != a)
            .unwrap_or_else(|| want.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from what users now see, first at line {}:\n  golden: {:?}\n  now:    {:?}\n\
             If the change is meant, rewrite it with STACKWARDEN_UPDATE_GOLDEN=1 and review the diff.\n--- now ---\n{actual}",
            path.display(),
            first + 1,
            want.lines().nth(first).unwrap_or(""),
            actual.lines().nth(first).unwrap_or(""),
        );
    }
}

fn id(kind: Kind, name: &str) -> ResourceId {
    ResourceId::new(kind, name)
}

/// A pass that found one of each thing a plan can say.
fn scenario() -> Plan {
    Plan {
        changes: vec![
            Change::new(id(Kind::SecurityGroup, "observability"), Action::Update)
                .caused_by(Cause::Drift)
                .with_fields(vec![FieldChange::added(
                    "spec.ingress[0]",
                    "tcp 3000 from sg-0123 (grafana from the load balancer)",
                )]),
            Change::new(id(Kind::Container, "loki"), Action::Replace)
                .caused_by(Cause::Drift)
                .because("runs as root")
                .with_fields(vec![FieldChange::changed("spec.user", "0", "10001:10001")]),
            Change::new(id(Kind::Parameter, "grafana-admin-password"), Action::Update)
                .caused_by(Cause::Manifest)
                .with_fields(vec![FieldChange::secret("value")]),
            Change::new(id(Kind::Container, "tempo"), Action::Create).caused_by(Cause::Missing),
        ],
        conditions: Vec::new(),
        violations: vec![Violation {
            rule: "no-root-containers",
            resource: "Container/loki".into(),
            path: "spec.user".into(),
            message: "runs as root (user \"0\")".into(),
            fix: "set spec.user to a numeric non-root uid:gid such as \"10001:10001\"".into(),
            world: Some(World::Host),
        }],
        problems: vec![
            Problem::Blocked(Blocked {
                id: id(Kind::Container, "pyroscope"),
                reason: BlockReason::HeldByForeignContainer,
                message: "Container/pyroscope: the name is held by a container stackwarden does not manage; remove or rename it".into(),
            }),
            Problem::Unreachable(ProviderFailure::new(
                World::Aws,
                ErrorClass::Transient,
                "AWS endpoint http://127.0.0.1:1: no answer in time",
            )),
        ],
        unobserved: vec![Unobserved {
            id: id(Kind::Bucket, "data"),
            class: ErrorClass::Permanent,
            error: "GetBucketPolicy: AccessDenied".into(),
        }],
    }
}

#[test]
fn the_plan_text_and_json_read_as_reviewed() {
    let plan = scenario();
    golden("plan.txt", &plan.to_string());
    golden(
        "plan.json",
        &format!("{}\n", serde_json::to_string_pretty(&plan).unwrap()),
    );
}

#[test]
fn the_status_body_reads_as_reviewed() {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let desired = stackwarden::manifest::load(&manifests, Some("local"))
        .unwrap()
        .desired;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let plan = scenario();
    let summary = PassSummary {
        started: Timestamp(at),
        duration_ms: 120,
        trigger: Trigger::Resync,
        result: PassResult::Failed,
        api_calls: BTreeMap::new(),
        writes: 0,
        drifts_found: plan.changes.len(),
        repairs: 0,
    };
    let mut status = Status::default();
    status.record_pass(
        PassRecord {
            desired: &desired,
            before: &plan,
            after: &plan,
            outcomes: &[],
            backoff: &BTreeMap::from([(id(Kind::Container, "loki"), at + Duration::from_secs(5))]),
            summary,
            covers: &|_| true,
            unobserved: &|k: Kind| {
                (!k.on_host())
                    .then(|| "AWS endpoint http://127.0.0.1:1: no answer in time".to_string())
            },
            kept: &|_| false,
            applying: &BTreeSet::new(),
        },
        at,
    );
    golden(
        "status.json",
        &format!("{}\n", serde_json::to_string_pretty(&status).unwrap()),
    );
}
