//! Folding passes into the status: conditions, transitions, drift duration, audit redaction.

use super::*;
use crate::model::{
    Desired, Ensure, HostSpec, Kind, MemSize, Mode, ParameterSpec, Resource, ResourceId,
    SourceLocation, Spec, StackSpec,
};
use crate::plan::{Action, Cause, Change, FieldChange, Plan};
use crate::provider::StepOutcome;

fn desired() -> Desired {
    let stack = StackSpec {
        project: "p".into(),
        environment: "e".into(),
        region: "us-east-1".into(),
        enabled: true,
        mode: Mode::Enforce,
        reconcile_interval: Duration::from_secs(30),
        domain: "example.com".into(),
        host: HostSpec {
            instance_type: "t3.medium".into(),
            memory_budget: MemSize(3 << 30),
            root: "/tmp".into(),
        },
        alerts: Default::default(),
        acknowledgements: Vec::new(),
    };
    let param: ParameterSpec = serde_json::from_value(serde_json::json!({
        "name": "/p/e/pw", "type": "SecureString",
        "valueFrom": {"env": "PW"}
    }))
    .unwrap();
    Desired {
        stack_name: "obs".into(),
        stack,
        environment: "e".into(),
        resources: vec![Resource {
            id: ResourceId::new(Kind::Parameter, "pw"),
            spec: Spec::Parameter(param),
            ensure: Ensure::Present,
            mode: Mode::Enforce,
            source: SourceLocation::default(),
        }],
    }
}

fn summary(at: SystemTime, result: PassResult) -> PassSummary {
    PassSummary {
        started: Timestamp(at),
        duration_ms: 10,
        trigger: Trigger::Resync,
        result,
        api_calls: BTreeMap::new(),
        writes: 0,
        drifts_found: 0,
        repairs: 0,
    }
}

fn drift() -> Change {
    Change::new(ResourceId::new(Kind::Parameter, "pw"), Action::Update)
        .with_fields(vec![FieldChange::secret("value")])
}

fn record(status: &mut Status, d: &Desired, after: &Plan, at: SystemTime, result: PassResult) {
    status.record_pass(
        PassRecord {
            desired: d,
            before: after,
            after,
            outcomes: &[],
            backoff: &BTreeMap::new(),
            summary: summary(at, result),
            covers: &|_| true,
            unobserved: &|_| None,
            kept: &|_| false,
            applying: &Default::default(),
        },
        at,
    );
}

#[test]
fn drift_sets_drifted_since_and_it_holds_until_repaired() {
    let d = desired();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let t1 = t0 + Duration::from_secs(30);
    let t2 = t1 + Duration::from_secs(30);
    let mut s = Status::default();
    record(&mut s, &d, &Plan::default(), t0, PassResult::Converged);
    assert_eq!(s.phase, Phase::Ready);
    let drifted = Plan {
        changes: vec![drift()],
        ..Plan::default()
    };
    record(&mut s, &d, &drifted, t1, PassResult::Drifted);
    record(&mut s, &d, &drifted, t2, PassResult::Drifted);
    let r = &s.resources[0];
    assert_eq!(r.drifted_since, Some(Timestamp(t1)));
    let c = r.condition("Drifted").unwrap();
    assert_eq!(c.status, ConditionStatus::True);
    assert_eq!(
        c.last_transition_time,
        Timestamp(t1),
        "unchanged status keeps its time"
    );
    assert_eq!(s.phase, Phase::Degraded);
    record(
        &mut s,
        &d,
        &Plan::default(),
        t2 + Duration::from_secs(1),
        PassResult::Converged,
    );
    let r = &s.resources[0];
    assert_eq!(r.drifted_since, None);
    assert_eq!(
        r.condition("Drifted").unwrap().status,
        ConditionStatus::False
    );
    assert_eq!(s.last_success, Some(Timestamp(t2 + Duration::from_secs(1))));
}

#[test]
fn a_failed_write_is_synced_false_with_its_error() {
    let d = desired();
    let now = SystemTime::now();
    let plan = Plan {
        changes: vec![drift()],
        ..Plan::default()
    };
    let outcome = StepOutcome::failed(
        drift(),
        crate::provider::StepError::permanent("PutParameter refused: AccessDenied"),
    );
    let mut s = Status::default();
    s.record_pass(
        PassRecord {
            desired: &d,
            before: &plan,
            after: &plan,
            outcomes: std::slice::from_ref(&outcome),
            backoff: &BTreeMap::from([(
                crate::model::ResourceId::new(crate::model::Kind::Parameter, "pw"),
                now,
            )]),
            summary: summary(now, PassResult::Failed),
            covers: &|_| true,
            unobserved: &|_| None,
            kept: &|_| false,
            applying: &Default::default(),
        },
        now,
    );
    let r = &s.resources[0];
    let synced = r.condition("Synced").unwrap();
    assert_eq!(synced.status, ConditionStatus::False);
    assert_eq!(synced.reason, "ApplyFailed");
    assert!(r.last_error.as_deref().unwrap().contains("AccessDenied"));
    assert_eq!(r.backoff_until, Some(Timestamp(now)));
}

#[test]
fn a_failed_write_keeps_its_error_while_its_backoff_holds_it_back() {
    let d = desired();
    let now = SystemTime::now();
    let plan = Plan {
        changes: vec![drift()],
        ..Plan::default()
    };
    let outcome = StepOutcome::failed(
        drift(),
        crate::provider::StepError::permanent("chown /opt/observability/loki/loki.yaml: EPERM"),
    );
    let held = BTreeMap::from([(ResourceId::new(Kind::Parameter, "pw"), now)]);
    let pass =
        |outcomes: &[StepOutcome], backoff: &BTreeMap<ResourceId, SystemTime>, s: &mut Status| {
            s.record_pass(
                PassRecord {
                    desired: &d,
                    before: &plan,
                    after: &plan,
                    outcomes,
                    backoff,
                    summary: summary(now, PassResult::Failed),
                    covers: &|_| true,
                    unobserved: &|_| None,
                    kept: &|_| false,
                    applying: &Default::default(),
                },
                now,
            )
        };
    let mut s = Status::default();
    pass(std::slice::from_ref(&outcome), &held, &mut s);
    // The next pass attempts nothing on it (backoff), and it still differs: the error that
    // holds it back is still the one to show.
    pass(&[], &held, &mut s);
    let r = &s.resources[0];
    assert_eq!(r.condition("Synced").unwrap().reason, "ApplyFailed");
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("loki.yaml")),
        "{r:?}"
    );
    // Once the backoff is over and nothing failed, the error is history.
    pass(&[], &BTreeMap::new(), &mut s);
    assert_eq!(s.resources[0].last_error, None);
}

#[test]
fn a_denied_write_is_synced_false_permission_denied_naming_the_action() {
    let d = desired();
    let now = SystemTime::now();
    let plan = Plan {
        changes: vec![drift()],
        ..Plan::default()
    };
    let outcome = StepOutcome::failed(
        drift(),
        crate::provider::StepError {
            class: crate::provider::ErrorClass::PermissionDenied,
            message: "grant ssm:PutParameter: User arn:aws:iam::1:user/ci is not authorized".into(),
        },
    );
    let mut s = Status::default();
    s.record_pass(
        PassRecord {
            desired: &d,
            before: &plan,
            after: &plan,
            outcomes: std::slice::from_ref(&outcome),
            backoff: &BTreeMap::new(),
            summary: summary(now, PassResult::Failed),
            covers: &|_| true,
            unobserved: &|_| None,
            kept: &|_| false,
            applying: &Default::default(),
        },
        now,
    );
    let synced = s.resources[0].condition("Synced").unwrap();
    assert_eq!(synced.status, ConditionStatus::False);
    assert_eq!(synced.reason, "PermissionDenied");
    assert!(
        synced.message.contains("ssm:PutParameter"),
        "{}",
        synced.message
    );
    assert_eq!(s.phase, Phase::Degraded);
}

#[test]
fn secrets_reach_status_and_audit_only_as_differs() {
    let d = desired();
    let now = SystemTime::now();
    let plan = Plan {
        changes: vec![drift()],
        ..Plan::default()
    };
    let mut s = Status::default();
    record(&mut s, &d, &plan, now, PassResult::Drifted);
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"sensitive\":true"), "{json}");
    assert!(describe_drift(&drift()).contains("value: differs"));
    let entry = AuditEntry::of(&StepOutcome::done(drift()), Trigger::Docker, now);
    assert!(entry.fields[0].changed_secret);
    assert!(entry.fields[0].before.is_none() && entry.fields[0].after.is_none());
    assert_eq!(entry.cause, "drift");
}

#[test]
fn creates_are_caused_by_missing_and_recorded_hashes_tell_drift_from_manifest() {
    let c = Change::new(ResourceId::new(Kind::Bucket, "data"), Action::Create);
    assert_eq!(c.cause, Cause::Missing);
    assert_eq!(Cause::from_recorded_hash(Some("abc"), "abc"), Cause::Drift);
    assert_eq!(
        Cause::from_recorded_hash(Some("abc"), "def"),
        Cause::Manifest
    );
    assert_eq!(Cause::from_recorded_hash(None, "def"), Cause::Manifest);
}

#[test]
fn the_pass_history_is_bounded() {
    let d = desired();
    let mut s = Status::default();
    let t0 = SystemTime::now();
    for i in 0..(PASS_HISTORY + 10) {
        record(
            &mut s,
            &d,
            &Plan::default(),
            t0 + Duration::from_secs(i as u64),
            PassResult::Converged,
        );
    }
    assert_eq!(s.passes.len(), PASS_HISTORY);
}

#[test]
fn resources_of_a_world_that_could_not_be_observed_are_unknown_with_its_error() {
    let d = desired();
    let now = SystemTime::now();
    let plan = Plan {
        problems: vec![crate::plan::Problem::Unreachable(
            crate::plan::ProviderFailure::new(
                crate::plan::World::Aws,
                crate::plan::ErrorClass::Transient,
                "AWS endpoint http://127.0.0.1:1: no answer in time",
            ),
        )],
        ..Plan::default()
    };
    let mut s = Status::default();
    s.record_pass(
        PassRecord {
            desired: &d,
            before: &plan,
            after: &plan,
            outcomes: &[],
            backoff: &BTreeMap::new(),
            summary: summary(now, PassResult::Failed),
            covers: &|_| true,
            unobserved: &|k| (k == Kind::Parameter).then(|| "no answer in time".to_string()),
            kept: &|_| false,
            applying: &Default::default(),
        },
        now,
    );
    let r = &s.resources[0];
    let ready = r.condition("Ready").unwrap();
    assert_eq!(ready.status, ConditionStatus::Unknown);
    assert_eq!(ready.reason, "ObserveFailed");
    assert_eq!(r.last_error.as_deref(), Some("no answer in time"));
    assert_eq!(s.phase, Phase::Degraded);
}

fn held(id: ResourceId) -> Plan {
    let mut plan = Plan::default();
    plan.block(crate::plan::Blocked {
        id,
        reason: crate::plan::BlockReason::HeldByForeignContainer,
        message: "the name is held by container 0123456789ab".into(),
    });
    plan
}

#[test]
fn a_resource_held_by_a_foreign_container_is_not_synced_and_drifted() {
    let d = desired();
    let now = SystemTime::now();
    let mut s = Status::default();
    let plan = held(ResourceId::new(Kind::Parameter, "pw"));
    record(&mut s, &d, &plan, now, PassResult::Failed);
    let r = &s.resources[0];
    let synced = r.condition("Synced").unwrap();
    assert_eq!(synced.status, ConditionStatus::False);
    assert_eq!(synced.reason, "HeldByForeignContainer");
    assert!(synced.message.contains("0123456789ab"), "{synced:?}");
    let drifted = r.condition("Drifted").unwrap();
    assert_eq!(drifted.status, ConditionStatus::True);
    assert_eq!(drifted.reason, "HeldByForeignContainer");
    assert_eq!(s.phase, Phase::Degraded);
    // Once the holder is gone and the resource is in sync, so is the status.
    record(&mut s, &d, &Plan::default(), now, PassResult::Converged);
    let r = &s.resources[0];
    assert_eq!(r.condition("Synced").unwrap().status, ConditionStatus::True);
    assert_eq!(s.phase, Phase::Ready);
}

#[test]
fn a_standing_violation_or_a_rejected_edit_keeps_the_stack_out_of_ready() {
    let d = desired();
    let now = SystemTime::now();
    let mut s = Status::default();
    let violated = Plan {
        violations: vec![crate::plan::Violation {
            world: None,
            rule: "iam-no-wildcard-actions",
            resource: "Lookup/profile".into(),
            path: "policy".into(),
            message: "allows *".into(),
            fix: "narrow it".into(),
        }],
        ..Plan::default()
    };
    record(&mut s, &d, &violated, now, PassResult::Converged);
    assert_eq!(s.phase, Phase::Degraded);
    record(&mut s, &d, &Plan::default(), now, PassResult::Converged);
    assert_eq!(s.phase, Phase::Ready);
    s.manifest.rejected = Some(Rejected {
        revision: "r".into(),
        at: Timestamp(now),
        errors: vec!["broken".into()],
    });
    assert_eq!(s.derive_phase(), Phase::Degraded);
}
