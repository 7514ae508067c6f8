//! The loop's own logic, driven through the `Provider` seam on tokio's paused clock: a
//! scripted host world (the one test double the architecture allows) stands in for Docker,
//! so that trigger storms, backoff, detached writes, outages and foreign holders can be
//! played out in virtual time. Everything else is the real loop: the real manifests loader,
//! engine, status, alert book and file watch. What the scripted world cannot show (the
//! Docker API, the S3 lease) is tested against the real servers in `tests/it`.

use super::worlds::{AwsWorld, Connect, HostWorld, Watch};
use super::{Controller, Handle, Options, Scope};
use crate::model::Desired;
use crate::plan::{Action, BlockReason, Blocked, Change, ConditionStatus, World};
use crate::provider::host::events::HostEvent;
use crate::provider::{
    ErrorClass, Provider, ProviderError, ProviderPlan, Stats, Step, StepError, StepOutcome,
    WriteGate,
};
use crate::status::{Phase, Status, Trigger};
use futures_util::future::BoxFuture;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Two containers, `a` and `b`, in enforce mode, resynced every 30 s.
const MANIFESTS: &str = r#"apiVersion: stackwarden.io/v1
kind: Stack
metadata:
  name: loop
spec:
  project: loop
  environment: ${env}
  region: us-east-1
  enabled: true
  reconcileInterval: 30s
  domain: example.com
  host:
    instanceType: t3.medium
    memoryBudget: 3G
---
apiVersion: stackwarden.io/v1
kind: Container
metadata:
  name: a
spec:
  image: example/a:1
  user: "1000:1000"
  securityOpt: [no-new-privileges]
  memory: 64M
---
apiVersion: stackwarden.io/v1
kind: Container
metadata:
  name: b
spec:
  image: example/b:1
  user: "1000:1000"
  securityOpt: [no-new-privileges]
  memory: 64M
"#;

/// What the scripted host world is like now, and what was done to it.
#[derive(Debug, Default)]
struct Script {
    /// Containers whose live state differs from the manifest.
    drifted: BTreeSet<String>,
    /// Declared names held by a container no stack manages.
    foreign: BTreeSet<String>,
    /// The engine does not answer.
    down: bool,
    /// Writes to these fail, permanently.
    failing: BTreeSet<String>,
    /// How long one write takes.
    write_takes: Duration,
    /// Observations made.
    observed: usize,
    /// Writes attempted, in order.
    attempts: Vec<String>,
}

type Shared = Arc<Mutex<Script>>;

fn lock(script: &Shared) -> std::sync::MutexGuard<'_, Script> {
    script.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host world the script describes.
struct Scripted(Shared);

impl Provider for Scripted {
    type Observed = (BTreeSet<String>, BTreeSet<String>);
    type Op = String;

    fn name(&self) -> &'static str {
        "docker"
    }

    fn world(&self) -> World {
        World::Host
    }

    async fn observe(&self, _desired: &Desired) -> Result<Self::Observed, ProviderError> {
        let mut s = lock(&self.0);
        s.observed += 1;
        if s.down {
            return Err(ProviderError::plain(
                World::Host,
                ErrorClass::Transient,
                "the engine does not answer",
            ));
        }
        Ok((s.drifted.clone(), s.foreign.clone()))
    }

    fn diff(&self, desired: &Desired, observed: &Self::Observed) -> ProviderPlan<String> {
        let (drifted, foreign) = observed;
        let mut plan = ProviderPlan::default();
        for (r, _) in desired.containers() {
            let name = &r.id.name;
            if foreign.contains(name) {
                plan.blocked.push(Blocked {
                    id: r.id.clone(),
                    reason: BlockReason::HeldByForeignContainer,
                    message: format!("the name {name} is held by a foreign container"),
                });
            } else if drifted.contains(name) {
                plan.steps.push(Step {
                    change: Change::new(r.id.clone(), Action::Update),
                    ops: vec![name.clone()],
                });
            }
        }
        plan
    }

    async fn apply(
        &self,
        _desired: &Desired,
        _observed: &Self::Observed,
        steps: Vec<Step<String>>,
        gate: &dyn WriteGate,
    ) -> Vec<StepOutcome> {
        let mut outcomes = Vec::new();
        for step in steps {
            if let Err(e) = gate.admit(&step.change).await {
                outcomes.push(StepOutcome::failed(step.change, e));
                continue;
            }
            let takes = lock(&self.0).write_takes;
            tokio::time::sleep(takes).await;
            let mut s = lock(&self.0);
            let name = step.change.id.name.clone();
            s.attempts.push(name.clone());
            if s.failing.contains(&name) {
                let error = StepError {
                    class: ErrorClass::Permanent,
                    message: "refused".to_string(),
                };
                outcomes.push(StepOutcome::failed(step.change, error));
            } else {
                s.drifted.remove(&name);
                outcomes.push(StepOutcome::done(step.change));
            }
        }
        outcomes
    }
}

/// Connects the scripted host world; its events come from the test.
struct Worlds {
    script: Shared,
    events: Mutex<Option<mpsc::Receiver<HostEvent>>>,
}

impl Connect for Worlds {
    fn aws<'a>(&'a self, _region: &'a str, _stats: Arc<Stats>) -> BoxFuture<'a, AwsWorld> {
        // The loop asks for AWS only when its scope or `${account}` needs it; these
        // manifests need neither.
        unreachable!("a host-scoped loop over manifests without ${{account}} never asks for AWS")
    }

    fn host<'a>(
        &'a self,
        _root: PathBuf,
        _stats: Arc<Stats>,
        _watch: Option<Watch>,
    ) -> BoxFuture<'a, Result<HostWorld, ProviderError>> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        let provider = Arc::new(Scripted(self.script.clone()));
        Box::pin(async move {
            Ok(HostWorld {
                provider,
                events,
                self_update: None,
            })
        })
    }

    fn s3<'a>(&'a self, _region: &'a str) -> BoxFuture<'a, aws_sdk_s3::Client> {
        unreachable!("these loops follow no remote source")
    }
}

/// A running loop over the scripted world.
struct Harness {
    script: Shared,
    handle: Handle,
    status: watch::Receiver<Arc<Status>>,
    events: mpsc::Sender<HostEvent>,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

fn start(script: Script) -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("stack.yaml"), MANIFESTS).expect("manifests written");
    let script = Arc::new(Mutex::new(script));
    let (events_tx, events_rx) = mpsc::channel(64);
    let worlds = Worlds {
        script: script.clone(),
        events: Mutex::new(Some(events_rx)),
    };
    let opts = Options {
        manifests: dir.path().to_path_buf(),
        env: None,
        root: Some(dir.path().to_path_buf()),
        host_root: Some(dir.path().join("host")),
        scope: Scope::Host,
        lease_ttl: Duration::from_secs(30),
        page_url: "http://127.0.0.1/".to_string(),
        source: None,
        aws_mode: None,
    };
    let (controller, handle) = Controller::with_worlds(opts, Arc::new(worlds));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(controller.run(stop_rx));
    Harness {
        script,
        status: handle.status.clone(),
        handle,
        events: events_tx,
        _dir: dir,
        _stop: stop_tx,
    }
}

impl Harness {
    /// Waits (in virtual time) until the published status satisfies `done`.
    async fn until(&mut self, what: &str, done: impl Fn(&Status) -> bool) -> Arc<Status> {
        let wait = async {
            loop {
                let now = self.status.borrow_and_update().clone();
                if done(&now) {
                    return now;
                }
                if self.status.changed().await.is_err() {
                    panic!("the loop stopped while waiting for: {what}");
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(600), wait).await {
            Ok(status) => status,
            Err(_) => panic!(
                "never happened: {what}; last status: {:#?}",
                self.status.borrow()
            ),
        }
    }

    fn attempts(&self, name: &str) -> usize {
        lock(&self.script)
            .attempts
            .iter()
            .filter(|n| *n == name)
            .count()
    }

    async fn event_about(&self, name: &str) {
        self.events
            .send(HostEvent::Container {
                action: "start".to_string(),
                name: name.to_string(),
                id: format!("id-{name}"),
            })
            .await
            .expect("the loop listens for events");
    }
}

fn synced(status: &Status, name: &str) -> Option<(ConditionStatus, String)> {
    let r = status
        .resources
        .iter()
        .find(|r| r.kind == "Container" && r.name == name)?;
    let c = r.condition("Synced")?;
    Some((c.status, c.reason.clone()))
}

#[tokio::test(start_paused = true)]
async fn a_storm_of_triggers_is_coalesced_into_few_passes() {
    let mut h = start(Script::default());
    h.until("the first pass", |s| s.last_pass.is_some()).await;
    let before = lock(&h.script).observed;
    for _ in 0..50 {
        h.handle
            .wake
            .try_send(Trigger::Http)
            .expect("the wake channel has room for 64");
    }
    // Let the loop drain the storm, then look.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let passes = lock(&h.script).observed - before;
    assert!(
        (1..=3).contains(&passes),
        "50 wake-ups made {passes} passes; they should coalesce into one or two"
    );
}

/// A container dying every 8 s wakes a Docker pass each time; the resync, which is what looks
/// at AWS, still comes on its own timer (30 s, jittered by at most a tenth).
#[tokio::test(start_paused = true)]
async fn docker_events_never_push_the_resync_back() {
    let mut h = start(Script::default());
    h.until("the first pass", |s| s.last_pass.is_some()).await;
    let events = h.events.clone();
    let storm = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(8)).await;
            let dying = HostEvent::Container {
                action: "die".to_string(),
                name: "a".to_string(),
                id: "id-a".to_string(),
            };
            if events.send(dying).await.is_err() {
                break;
            }
        }
    });
    let resynced = tokio::time::timeout(
        Duration::from_secs(45),
        h.until("a resync pass amid Docker passes", |s| {
            s.passes.iter().any(|p| p.trigger == Trigger::Resync)
        }),
    )
    .await;
    storm.abort();
    let passes = h.status.borrow().passes.clone();
    assert!(
        resynced.is_ok(),
        "no resync in 45 s of events every 8 s: {:?}",
        passes.iter().map(|p| p.trigger).collect::<Vec<_>>()
    );
    assert!(
        passes.iter().any(|p| p.trigger == Trigger::Docker),
        "the events woke Docker passes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_waits_and_an_event_about_the_resource_lifts_its_backoff() {
    let mut h = start(Script {
        drifted: ["a".to_string()].into(),
        failing: ["a".to_string()].into(),
        ..Script::default()
    });
    h.until("a's write failed", |s| {
        synced(s, "a").is_some_and(|(st, _)| st == ConditionStatus::False)
    })
    .await;
    assert_eq!(h.attempts("a"), 1);
    // A permanent failure waits for the resync (30 s): passes woken meanwhile leave it be.
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.handle.wake.try_send(Trigger::Http).expect("room to wake");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.attempts("a"), 1, "a backed-off write was retried early");
    // Whatever blocked it may be gone: news about it retries it now.
    lock(&h.script).failing.clear();
    h.event_about("a").await;
    h.until("a is repaired", |s| {
        synced(s, "a").is_some_and(|(st, _)| st == ConditionStatus::True)
    })
    .await;
    assert_eq!(h.attempts("a"), 2);
    let waited = lock(&h.script).attempts.len();
    assert_eq!(waited, 2, "only a was written");
}

#[tokio::test(start_paused = true)]
async fn a_write_that_finishes_after_its_pass_is_folded_in_like_an_inline_one() {
    let mut h = start(Script {
        drifted: ["a".to_string()].into(),
        write_takes: super::DETACH_AFTER * 3,
        ..Script::default()
    });
    // The pass shows its plan while the write goes on.
    let during = h
        .until("the pass let the write go on", |s| {
            s.last_pass.is_some() && s.audit.is_empty()
        })
        .await;
    assert!(
        during
            .resources
            .iter()
            .any(|r| r.name == "a" && r.drift.is_some()),
        "the pass that let the write go on still shows a's drift"
    );
    let after = h
        .until("the background write is audited", |s| {
            s.audit.iter().any(|e| e.resource == "Container/a")
        })
        .await;
    assert_eq!(after.audit.len(), 1);
    // Converged means observed: the write's end wakes a pass that sees a in sync.
    h.until("a is seen in sync", |s| {
        synced(s, "a").is_some_and(|(st, _)| st == ConditionStatus::True)
            && s.resources.iter().all(|r| r.drift.is_none())
    })
    .await;
    assert_eq!(
        h.attempts("a"),
        1,
        "the claimed write was not started twice"
    );
}

#[tokio::test(start_paused = true)]
async fn a_world_that_goes_unreachable_and_back_degrades_then_recovers() {
    let mut h = start(Script::default());
    h.until("ready", |s| {
        s.last_pass.is_some() && s.phase == Phase::Ready
    })
    .await;
    lock(&h.script).down = true;
    h.handle.wake.try_send(Trigger::Http).expect("room to wake");
    let down = h
        .until("the outage shows", |s| s.phase == Phase::Degraded)
        .await;
    assert!(
        super::readiness(&down, Scope::Host).is_err(),
        "not ready while Docker does not answer"
    );
    assert!(
        down.errors.iter().any(|e| e.contains("does not answer")),
        "the outage is named: {:?}",
        down.errors
    );
    lock(&h.script).down = false;
    h.handle.wake.try_send(Trigger::Http).expect("room to wake");
    let back = h.until("recovered", |s| s.phase == Phase::Ready).await;
    assert!(super::readiness(&back, Scope::Host).is_ok());
    assert!(back.errors.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_foreign_holder_shows_on_its_resource_is_never_written_and_leaving_clears_it() {
    let mut h = start(Script {
        foreign: ["a".to_string()].into(),
        drifted: ["a".to_string()].into(),
        ..Script::default()
    });
    let held = h
        .until("a shows its foreign holder", |s| {
            synced(s, "a").is_some_and(|(_, reason)| reason == "HeldByForeignContainer")
        })
        .await;
    assert_eq!(held.phase, Phase::Degraded);
    assert_eq!(
        synced(&held, "b").map(|(st, _)| st),
        Some(ConditionStatus::True),
        "b is not touched by a's problem"
    );
    h.event_about("a").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        h.attempts("a"),
        0,
        "a name held by a foreign container is never written"
    );
    // The holder leaves; its departure is an event about a.
    lock(&h.script).foreign.clear();
    h.event_about("a").await;
    h.until("a is repaired and ready", |s| {
        synced(s, "a").is_some_and(|(st, _)| st == ConditionStatus::True) && s.phase == Phase::Ready
    })
    .await;
    assert_eq!(h.attempts("a"), 1);
}

#[test]
fn readiness_waits_for_a_first_revision_and_then_names_the_one_in_force() {
    use crate::source::fetch::SourceStatus;
    let mut status = Status {
        source: Some(SourceStatus {
            url: "s3://b/stackwarden".to_string(),
            last_error: Some("GetObject failed: NoSuchBucket".to_string()),
            ..SourceStatus::default()
        }),
        ..Status::default()
    };
    let why = super::readiness(&status, Scope::Host).expect_err("nothing is in force");
    assert!(why.contains("NoSuchBucket"), "{why}");
    assert_eq!(super::source_line(&status), None);
    if let Some(s) = status.source.as_mut() {
        s.revision = Some(3);
    }
    let line = super::source_line(&status).unwrap_or_default();
    assert!(
        line.contains("revision 3") && line.contains("NoSuchBucket"),
        "an unreachable bucket is named beside the revision in force: {line}"
    );
}
