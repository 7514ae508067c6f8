//! The alert book as a specification: what fires, once, and when it resolves.

use super::*;
use crate::model::Acknowledgement;
use crate::plan::{Action, FieldChange};

fn desired(mode: Mode) -> Desired {
    let mut d = crate::manifest::load(std::path::Path::new("manifests"), Some("local"))
        .expect("the shipped manifests load")
        .desired;
    d.stack.mode = mode;
    d
}

fn root_loki() -> Change {
    Change::new(ResourceId::new(Kind::Container, "loki"), Action::Replace)
        .with_fields(vec![FieldChange::changed(
            "spec.user",
            "\"0\"",
            "\"10001:10001\"",
        )])
        .caused_by(Cause::Drift)
}

fn root_violation() -> Violation {
    Violation {
        world: None,
        rule: "no-root-containers",
        resource: "Container/loki".into(),
        path: "spec.user".into(),
        message: "runs as root".into(),
        fix: "set a non-root user".into(),
    }
}

fn drifted() -> Plan {
    Plan {
        changes: vec![root_loki()],
        violations: vec![root_violation()],
        ..Plan::default()
    }
}

fn repaired() -> Vec<StepOutcome> {
    vec![StepOutcome {
        change: root_loki(),
        error: None,
        class: None,
    }]
}

struct Run {
    book: Book,
    desired: Desired,
}

impl Run {
    fn new(mode: Mode) -> Run {
        let mut run = Run {
            book: Book::default(),
            desired: desired(mode),
        };
        // The stack exists: a converged first pass.
        run.pass(&Plan::default(), &Plan::default(), &[], 0);
        run
    }

    fn pass(
        &mut self,
        before: &Plan,
        after: &Plan,
        outcomes: &[StepOutcome],
        failures: u32,
    ) -> Vec<Event> {
        self.pass_at(before, after, outcomes, failures, SystemTime::now())
    }

    fn pass_at(
        &mut self,
        before: &Plan,
        after: &Plan,
        outcomes: &[StepOutcome],
        failures: u32,
        now: SystemTime,
    ) -> Vec<Event> {
        self.book.pass(&PassView {
            desired: &self.desired,
            before,
            after,
            outcomes,
            looked_at: &|_| true,
            failures: &|_| failures,
            restarts: &|_| 0,
            busy: &|_| false,
            page: "http://127.0.0.1:9464/",
            now,
        })
    }
}

/// The transitions, firings first, each group in name order (the order within a group is
/// the fingerprints', which means nothing).
fn names(events: &[Event]) -> Vec<String> {
    let mut out: Vec<(bool, String)> = events
        .iter()
        .map(|e| match e {
            Event::Firing(a) => (false, format!("firing {}", a.name.as_str())),
            Event::Resolved(a, _) => (true, format!("resolved {}", a.name.as_str())),
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, n)| n).collect()
}

fn firing(events: &[Event], name: AlertName) -> &Alert {
    events
        .iter()
        .find_map(|e| match e {
            Event::Firing(a) if a.name == name => Some(a),
            _ => None,
        })
        .expect("it fires")
}

#[test]
fn a_drift_repaired_in_its_pass_fires_once_and_resolves() {
    let mut run = Run::new(Mode::Enforce);
    let events = run.pass(&drifted(), &Plan::default(), &repaired(), 0);
    assert_eq!(
        names(&events),
        [
            "firing PolicyViolation",
            "firing StackDrift",
            "resolved PolicyViolation",
            "resolved StackDrift"
        ]
    );
    let a = firing(&events, AlertName::StackDrift);
    assert_eq!(a.labels["cause"], "drift");
    assert_eq!(a.labels["resource"], "loki");
    assert_eq!(a.labels["kind"], "Container");
    assert!(a.annotations["differs"].contains("spec.user"));
    assert_eq!(a.annotations["action"], "repaired");
    assert!(run.book.active().next().is_none());
}

#[test]
fn a_standing_drift_in_warn_mode_fires_once_across_passes() {
    let mut run = Run::new(Mode::Warn);
    let first = run.pass(&drifted(), &drifted(), &[], 0);
    assert_eq!(
        names(&first),
        ["firing PolicyViolation", "firing StackDrift"]
    );
    let a = firing(&first, AlertName::StackDrift);
    assert!(a.annotations["action"].contains("warn"), "{a:?}");
    for _ in 0..10 {
        assert!(run.pass(&drifted(), &drifted(), &[], 0).is_empty());
    }
    let gone = run.pass(&Plan::default(), &Plan::default(), &[], 0);
    assert_eq!(
        names(&gone),
        ["resolved PolicyViolation", "resolved StackDrift"]
    );
}

#[test]
fn observe_mode_alerts_nothing() {
    let mut run = Run::new(Mode::Observe);
    assert!(run.pass(&drifted(), &drifted(), &[], 0).is_empty());
}

/// Every declared resource (but the Stack and the Lookups) planned as missing.
fn everything_missing(d: &Desired) -> Plan {
    Plan {
        changes: d
            .resources
            .iter()
            .filter(|r| !matches!(r.id.kind, Kind::Stack | Kind::Lookup))
            .map(|r| Change::new(r.id.clone(), Action::Create).caused_by(Cause::Missing))
            .collect(),
        ..Plan::default()
    }
}

fn loki_missing() -> Plan {
    Plan {
        changes: vec![
            Change::new(ResourceId::new(Kind::Container, "loki"), Action::Create)
                .caused_by(Cause::Missing),
        ],
        ..Plan::default()
    }
}

#[test]
fn the_first_converge_of_a_new_stack_alerts_nothing_a_later_removal_does() {
    let mut run = Run {
        book: Book::default(),
        desired: desired(Mode::Enforce),
    };
    let new = everything_missing(&run.desired);
    assert!(run.pass(&new, &Plan::default(), &[], 0).is_empty());
    let events = run.pass(&loki_missing(), &loki_missing(), &[], 0);
    assert_eq!(names(&events), ["firing StackDrift"]);
}

#[test]
fn a_daemon_starting_on_an_existing_stack_alerts_on_what_was_removed_while_it_was_down() {
    let mut run = Run {
        book: Book::default(),
        desired: desired(Mode::Enforce),
    };
    // The first pass of this process: everything exists but loki.
    let events = run.pass(&loki_missing(), &Plan::default(), &[], 0);
    assert_eq!(names(&events), ["firing StackDrift", "resolved StackDrift"]);
    let a = firing(&events, AlertName::StackDrift);
    assert!(
        a.annotations["summary"].contains("removed by hand"),
        "{a:?}"
    );
}

#[test]
fn an_acknowledged_drift_is_neither_alerted_nor_once_expired_left_alone() {
    let mut run = Run::new(Mode::Enforce);
    let now = SystemTime::now();
    run.desired.stack.acknowledgements = vec![Acknowledgement {
        resource: "Container/loki".into(),
        fields: vec!["spec.user".into()],
        rule: Some("no-root-containers".into()),
        reason: "migrating loki's data, ops-123".into(),
        expires: Some(
            humantime::format_rfc3339_seconds(now + std::time::Duration::from_secs(60)).to_string(),
        ),
    }];
    assert!(run.pass_at(&drifted(), &drifted(), &[], 0, now).is_empty());
    assert!(crate::engine::acknowledged(&run.desired, &root_loki(), now));
    let later = now + std::time::Duration::from_secs(120);
    assert!(!crate::engine::acknowledged(
        &run.desired,
        &root_loki(),
        later
    ));
    let events = run.pass_at(&drifted(), &drifted(), &[], 0, later);
    assert_eq!(
        names(&events),
        ["firing PolicyViolation", "firing StackDrift"]
    );
}

#[test]
fn an_acknowledgement_of_some_fields_does_not_cover_others() {
    let mut run = Run::new(Mode::Enforce);
    run.desired.stack.acknowledgements = vec![Acknowledgement {
        resource: "Container/loki".into(),
        fields: vec!["spec.memory".into()],
        rule: None,
        reason: "r".into(),
        expires: Some("2999-01-01".into()),
    }];
    let events = run.pass(&drifted(), &drifted(), &[], 0);
    assert_eq!(
        names(&events),
        ["firing PolicyViolation", "firing StackDrift"]
    );
}

#[test]
fn a_repair_that_keeps_failing_raises_reconcile_failing_and_resolves_when_it_succeeds() {
    let mut run = Run::new(Mode::Enforce);
    let failed = vec![StepOutcome {
        change: root_loki(),
        error: Some("docker: no such image".into()),
        class: None,
    }];
    run.pass(&drifted(), &drifted(), &failed, 1);
    assert!(run.pass(&drifted(), &drifted(), &failed, 2).is_empty());
    let events = run.pass(&drifted(), &drifted(), &failed, FAILING_AFTER);
    assert_eq!(names(&events), ["firing ReconcileFailing"]);
    let events = run.pass(&drifted(), &Plan::default(), &repaired(), 0);
    assert_eq!(
        names(&events),
        [
            "resolved PolicyViolation",
            "resolved ReconcileFailing",
            "resolved StackDrift"
        ]
    );
    assert!(run.book.active().next().is_none());
}

#[test]
fn a_pass_that_did_not_look_at_a_world_leaves_its_alerts_alone() {
    let mut run = Run::new(Mode::Warn);
    run.pass(&drifted(), &drifted(), &[], 0);
    let events = run.book.pass(&PassView {
        desired: &run.desired,
        before: &Plan::default(),
        after: &Plan::default(),
        outcomes: &[],
        looked_at: &|k: Kind| !k.on_host(),
        failures: &|_| 0,
        restarts: &|_| 0,
        busy: &|_| false,
        page: "",
        now: SystemTime::now(),
    });
    assert!(events.is_empty());
    assert_eq!(run.book.active().count(), 2);
}

#[test]
fn fingerprints_are_stable_and_differ_by_field_set() {
    let fingerprints = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Firing(a) | Event::Resolved(a, _) => a.fingerprint.clone(),
            })
            .collect()
    };
    let mut a = Run::new(Mode::Warn);
    let mut b = Run::new(Mode::Warn);
    let fa = fingerprints(&a.pass(&drifted(), &drifted(), &[], 0));
    let fb = fingerprints(&b.pass(&drifted(), &drifted(), &[], 0));
    assert_eq!(fa, fb);
    let mut other = drifted();
    other.changes[0]
        .fields
        .push(FieldChange::changed("spec.memory", "1", "2"));
    let events = a.pass(&other, &other, &[], 0);
    assert_eq!(names(&events), ["firing StackDrift", "resolved StackDrift"]);
    assert!(!fa.contains(&fingerprints(&events)[0]));
}

#[test]
fn a_container_restarted_again_and_again_raises_container_unhealthy_until_it_settles() {
    let mut run = Run::new(Mode::Enforce);
    let unhealthy = Plan {
        changes: vec![
            Change::new(ResourceId::new(Kind::Container, "loki"), Action::Update).with_fields(
                vec![FieldChange::changed(
                    crate::plan::HEALTH_FIELD,
                    "unhealthy",
                    "healthy",
                )],
            ),
        ],
        ..Plan::default()
    };
    let pass = |run: &mut Run, restarts: u32| {
        run.book.pass(&PassView {
            desired: &run.desired,
            before: &unhealthy,
            after: &Plan::default(),
            outcomes: &[],
            looked_at: &|_| true,
            failures: &|_| 0,
            restarts: &|id: &ResourceId| {
                if id.kind == Kind::Container && id.name == "loki" {
                    restarts
                } else {
                    0
                }
            },
            busy: &|_| false,
            page: "",
            now: SystemTime::now(),
        })
    };
    // A failing health check is not drift: the first restarts alert nothing.
    assert!(pass(&mut run, 1).is_empty());
    assert!(pass(&mut run, 2).is_empty());
    assert_eq!(
        names(&pass(&mut run, FAILING_AFTER)),
        ["firing ContainerUnhealthy"]
    );
    assert!(pass(&mut run, FAILING_AFTER + 1).is_empty());
    assert_eq!(names(&pass(&mut run, 0)), ["resolved ContainerUnhealthy"]);
}

#[test]
fn a_declared_name_held_by_a_foreign_container_raises_stack_drift_until_it_is_gone() {
    let mut run = Run::new(Mode::Enforce);
    let mut held = Plan {
        violations: vec![root_violation()],
        ..Plan::default()
    };
    held.block(crate::plan::Blocked {
        id: ResourceId::new(Kind::Container, "loki"),
        reason: crate::plan::BlockReason::HeldByForeignContainer,
        message: "Container/loki: the name is held by container 0123456789ab".into(),
    });
    let events = run.pass(&held, &held, &[], 0);
    assert_eq!(
        names(&events),
        ["firing PolicyViolation", "firing StackDrift"]
    );
    let a = firing(&events, AlertName::StackDrift);
    assert_eq!(a.labels["resource"], "loki");
    assert!(a.annotations["summary"].contains("0123456789ab"), "{a:?}");
    assert!(a.annotations["action"].contains("never writes"), "{a:?}");
    assert!(run.pass(&held, &held, &[], 0).is_empty(), "fires once");
    let gone = run.pass(&Plan::default(), &Plan::default(), &[], 0);
    assert_eq!(
        names(&gone),
        ["resolved PolicyViolation", "resolved StackDrift"]
    );
}

fn edited_loki() -> Change {
    Change::new(ResourceId::new(Kind::Container, "loki"), Action::Replace)
        .with_fields(vec![FieldChange::changed("spec.memory", "256M", "384M")])
        .caused_by(Cause::Manifest)
}

#[test]
fn a_reviewed_change_applied_in_enforce_mode_alerts_nothing() {
    let mut run = Run::new(Mode::Enforce);
    let before = Plan {
        changes: vec![edited_loki()],
        ..Plan::default()
    };
    let applied = vec![StepOutcome {
        change: edited_loki(),
        error: None,
        class: None,
    }];
    assert!(run.pass(&before, &Plan::default(), &applied, 0).is_empty());
}

#[test]
fn a_reviewed_change_held_back_by_warn_mode_fires_stack_drift_with_cause_manifest() {
    let mut run = Run::new(Mode::Warn);
    let held = Plan {
        changes: vec![edited_loki()],
        ..Plan::default()
    };
    let events = run.pass(&held, &held, &[], 0);
    assert_eq!(names(&events), ["firing StackDrift"]);
    assert_eq!(
        firing(&events, AlertName::StackDrift).labels["cause"],
        "manifest"
    );
}

#[test]
fn every_alert_has_a_row_in_the_catalogue_with_its_severity() {
    let catalogue = include_str!("../../docs/alerts.md");
    for name in AlertName::ALL {
        let row = catalogue
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", name.as_str())));
        let Some(row) = row else {
            panic!("docs/alerts.md has no row for {}", name.as_str());
        };
        assert!(
            row.trim_end()
                .ends_with(&format!("| {} |", name.severity())),
            "docs/alerts.md gives {} another severity: {row}",
            name.as_str()
        );
    }
}
