//! Faults, each a test. A controller can be killed at any instant (SIGKILL: no clean-up, no
//! lease released), and the worlds it acts on can go away under it. Whatever the instant, the
//! stack is never left with two of anything, and once the controller runs again it converges.
//!
//! Nothing is mocked: a moto server per test, the real Docker engine (a private second engine
//! where a test must kill and restart one), the real binary killed with SIGKILL. What exists
//! is counted through the AWS SDK and the Docker API, never read from stackwarden's output.
//!
//! Not here, because tests/it/daemon.rs already has it: AWS (moto) stopped and started again
//! under a running daemon (`with_aws_down_the_daemon_starts_not_ready_and_converges_when_it_is_back`),
//! and the Docker socket cut and restored by a proxy while a container is removed behind it
//! (`with_docker_gone_the_daemon_is_not_ready_and_converges_when_it_is_back`).

use crate::support::cli::Cli;
use crate::support::daemon::{
    Daemon, DaemonOptions, SECRET, TOKEN, free_port, repo_copy, set_value,
};
use crate::support::docker::{self as dk, STUB_IMAGE};
use crate::support::moto::Moto;
use crate::support::world::Clients;
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const STACK: &str = "observability";
/// What the shipped manifests name, for project durable-code, environment local, account
/// 123456789012 (moto's).
const SECURITY_GROUP: &str = "durable-code-local-observability-sg";
const TARGET_GROUP: &str = "durable-code-local-faro-tg";
const ALB: &str = "durable-code-local-alb";
const RULE_PRIORITY: &str = "91";
const BUCKET: &str = "durable-code-local-observability-123456789012";
const PARAMETER: &str = "/durable-code/local/grafana/admin-password";
const CONTAINERS: [&str; 9] = dk::LOCAL_CONTAINERS;
/// Kills per test.
const KILLS: usize = 20;
/// A cold converge of the whole local stack takes seconds; CI machines are slower.
const CONVERGE: Duration = Duration::from_secs(180);
/// What a refused apply says (src/cli.rs, `take_lease`).
const REFUSED: &str = "the stack's lease is held by";

// ------------------------------------------------------------------------------------------
// Counting what exists, through the SDK and the Docker API.

/// What exists of the stack: for each declared thing, the ids of what carries its name (at
/// most one is right); and anything else that could only be a stray copy.
#[derive(Debug, Default)]
struct Census {
    declared: BTreeMap<String, Vec<String>>,
    strays: Vec<String>,
}

impl Census {
    fn add(&mut self, what: impl Into<String>, id: impl Into<String>) {
        self.declared
            .entry(what.into())
            .or_default()
            .push(id.into());
    }

    /// Everything declared, found zero or one time, and no stray.
    fn duplicates(&self) -> Vec<String> {
        let mut bad: Vec<String> = self
            .declared
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(what, ids)| format!("{} × {what}: {ids:?}", ids.len()))
            .collect();
        bad.extend(self.strays.iter().map(|s| format!("stray: {s}")));
        bad
    }

    /// Everything declared found exactly once, and no stray.
    fn not_exactly_one(&self) -> Vec<String> {
        let mut bad = self.duplicates();
        for what in expected() {
            let n = self.declared.get(&what).map_or(0, Vec::len);
            if n != 1 {
                bad.push(format!("{n} × {what}"));
            }
        }
        bad
    }

    /// One line: how many of each.
    fn summary(&self) -> String {
        let mut line = String::new();
        for (what, ids) in &self.declared {
            let _ = write!(line, "{what}={} ", ids.len());
        }
        line.trim_end().to_string()
    }
}

/// Every key a converged stack has in its census.
fn expected() -> Vec<String> {
    let mut keys = vec![
        format!("security group {SECURITY_GROUP}"),
        format!("instance tagged stackwarden:stack={STACK}"),
        format!("target group {TARGET_GROUP}"),
        format!("listener rule priority {RULE_PRIORITY} on :80"),
        format!("bucket {BUCKET}"),
        format!("parameter {PARAMETER}"),
    ];
    keys.extend(CONTAINERS.iter().map(|c| format!("container {c}")));
    keys
}

fn filter(name: &str, values: &[&str]) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// Counts the stack's AWS resources. The seeded world has no instance, target group,
/// listener rule, bucket or parameter of its own (but AWS's public ones): any other one is a
/// stray.
async fn count_aws(aws: &Clients, census: &mut Census) {
    // Security groups: by name, and anything else carrying the stack's tag.
    let mut groups = BTreeMap::new();
    for f in [
        filter("group-name", &[SECURITY_GROUP]),
        filter("tag:stackwarden:stack", &[STACK]),
    ] {
        let out = aws
            .ec2
            .describe_security_groups()
            .filters(f)
            .send()
            .await
            .expect("DescribeSecurityGroups");
        for g in out.security_groups() {
            groups.insert(
                g.group_id().unwrap_or_default().to_string(),
                g.group_name().unwrap_or_default().to_string(),
            );
        }
    }
    for (id, name) in groups {
        if name == SECURITY_GROUP {
            census.add(format!("security group {SECURITY_GROUP}"), id);
        } else {
            census.strays.push(format!("security group {name} ({id})"));
        }
    }

    // Instances: every one not terminated, which must carry the stack's tag.
    let out = aws
        .ec2
        .describe_instances()
        .filters(filter(
            "instance-state-name",
            &["pending", "running", "shutting-down", "stopping", "stopped"],
        ))
        .send()
        .await
        .expect("DescribeInstances");
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let id = i.instance_id().unwrap_or_default().to_string();
        let ours = i
            .tags()
            .iter()
            .any(|t| t.key() == Some("stackwarden:stack") && t.value() == Some(STACK));
        if ours {
            census.add(format!("instance tagged stackwarden:stack={STACK}"), id);
        } else {
            census
                .strays
                .push(format!("instance {id} without the stack's tag"));
        }
    }

    // Target groups.
    let out = aws
        .elbv2
        .describe_target_groups()
        .send()
        .await
        .expect("DescribeTargetGroups");
    for tg in out.target_groups() {
        let name = tg.target_group_name().unwrap_or_default();
        let arn = tg.target_group_arn().unwrap_or_default().to_string();
        if name == TARGET_GROUP {
            census.add(format!("target group {TARGET_GROUP}"), arn);
        } else {
            census.strays.push(format!("target group {name}"));
        }
    }

    // Listener rules of the ALB's listeners (the seed makes none but the defaults).
    let lb = aws
        .elbv2
        .describe_load_balancers()
        .names(ALB)
        .send()
        .await
        .expect("DescribeLoadBalancers");
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let listeners = aws
        .elbv2
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .expect("DescribeListeners");
    for l in listeners.listeners() {
        let port = l.port().unwrap_or_default();
        let rules = aws
            .elbv2
            .describe_rules()
            .listener_arn(l.listener_arn().unwrap())
            .send()
            .await
            .expect("DescribeRules");
        for r in rules.rules() {
            if r.is_default() == Some(true) {
                continue;
            }
            let priority = r.priority().unwrap_or_default();
            let arn = r.rule_arn().unwrap_or_default().to_string();
            if priority == RULE_PRIORITY {
                census.add(
                    format!("listener rule priority {RULE_PRIORITY} on :{port}"),
                    arn,
                );
            } else {
                census
                    .strays
                    .push(format!("listener rule priority {priority} on :{port}"));
            }
        }
    }

    // Buckets.
    let out = aws.s3.list_buckets().send().await.expect("ListBuckets");
    for b in out.buckets() {
        let name = b.name().unwrap_or_default();
        if name == BUCKET {
            census.add(format!("bucket {BUCKET}"), name);
        } else {
            census.strays.push(format!("bucket {name}"));
        }
    }

    // Parameters.
    let mut token = None;
    loop {
        let out = aws
            .ssm
            .describe_parameters()
            .max_results(50)
            .set_next_token(token)
            .send()
            .await
            .expect("DescribeParameters");
        for p in out.parameters() {
            let name = p.name().unwrap_or_default();
            if name == PARAMETER {
                census.add(format!("parameter {PARAMETER}"), name);
            } else if !name.starts_with("/aws/") {
                // (/aws/service/…: AWS's public parameters, which moto serves too.)
                census.strays.push(format!("parameter {name}"));
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
}

/// Counts the stack's containers, running or not: one per declared name at most, and none
/// of the stack's under another name.
async fn count_containers(docker: &Docker, census: &mut Census) {
    let mut found: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut by_label = HashMap::new();
    by_label.insert(
        "label".to_string(),
        vec![format!("stackwarden.stack={STACK}")],
    );
    let mut queries = vec![by_label];
    for name in CONTAINERS {
        let mut by_name = HashMap::new();
        by_name.insert("name".to_string(), vec![format!("^/{name}$")]);
        queries.push(by_name);
    }
    for filters in queries {
        let opts = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        for c in docker
            .list_containers(Some(opts))
            .await
            .expect("containers can be listed")
        {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let ours = c
                .labels
                .as_ref()
                .and_then(|l| l.get("stackwarden.stack"))
                .is_some_and(|s| s == STACK);
            found.insert(c.id.clone().unwrap_or_default(), (name, ours));
        }
    }
    for (id, (name, ours)) in found {
        if CONTAINERS.contains(&name.as_str()) {
            census.add(format!("container {name}"), id);
        } else if ours {
            census.strays.push(format!("container {name} ({id})"));
        }
    }
}

async fn census(aws: &Clients, docker: &Docker) -> Census {
    let mut census = Census::default();
    count_aws(aws, &mut census).await;
    count_containers(docker, &mut census).await;
    census
}

// ------------------------------------------------------------------------------------------
// Running the binary.

/// A private copy of the repository (manifests and content, a host root), its alerts pointed
/// at a closed port so no test alerts the local world's Alertmanager.
fn world_repo() -> tempfile::TempDir {
    let repo = repo_copy("30s");
    set_value(
        repo.path(),
        "alertmanagerUrl",
        &format!("http://127.0.0.1:{}", free_port()),
    );
    std::fs::create_dir_all(repo.path().join("host-root")).unwrap();
    repo
}

/// `stackwarden <command> --env local` over a repository copy, against this moto and the
/// shared engine, full scope, output to `log`.
fn stackwarden(command: &str, repo: &Path, moto: &Moto, log: &Path) -> Command {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Cli::new(&[command, "--env", "local", "-f"])
        .arg(repo.join("manifests"))
        .arg("--host-root")
        .arg(repo.join("host-root"))
        .moto(moto)
        .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", SECRET)
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .env_remove("RUST_LOG")
        .env_remove("STACKWARDEN_LOG")
        .command();
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    cmd
}

/// How one run ended.
#[derive(Debug)]
enum End {
    Killed,
    Exited(ExitStatus),
}

/// Waits up to `delay` for `child`, then SIGKILLs it if it still runs.
async fn kill_after(child: &mut Child, delay: Duration) -> End {
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return End::Exited(status);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5).min(deadline - Instant::now())).await;
    }
    child.kill().unwrap(); // SIGKILL; an exit in between leaves a zombie, and that is fine
    child.wait().unwrap();
    End::Killed
}

/// Runs a command to completion (waiting on a thread, not the test's runtime).
async fn run(mut cmd: Command) -> ExitStatus {
    tokio::task::spawn_blocking(move || cmd.status().expect("the stackwarden binary runs"))
        .await
        .unwrap()
}

/// A random delay up to `max`.
/// A random instant within the first 80 % of `max`: a loaded machine converges at its own
/// pace, and a kill drawn past the end lands on nothing.
fn random_delay(max: Duration) -> Duration {
    Duration::from_millis(fastrand::u64(0..=max.as_millis() as u64 * 4 / 5))
}

/// How long a cold apply of the whole local stack (AWS and host, from nothing) takes on this
/// machine: measured once, in a world of its own, and the kills are spread over it.
async fn cold_apply_time() -> Duration {
    static MEASURED: tokio::sync::OnceCell<Duration> = tokio::sync::OnceCell::const_new();
    *MEASURED
        .get_or_init(|| async {
            let docker = dk::docker().await;
            dk::cleanup(&docker, STACK, &CONTAINERS).await;
            let moto = Moto::start(&[]).await;
            let repo = world_repo();
            let log = repo.path().join("cold-apply.log");
            let started = Instant::now();
            let status = run(stackwarden("apply", repo.path(), &moto, &log)).await;
            let took = started.elapsed();
            assert!(
                status.success(),
                "a cold apply failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            dk::cleanup(&docker, STACK, &CONTAINERS).await;
            eprintln!("faults: a cold apply took {took:?}");
            took
        })
        .await
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last `n` lines of a text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------------------------------

/// An empty world: the stack's containers removed from the shared engine, a fresh seeded
/// moto, a fresh repository copy and host root.
struct World {
    moto: Moto,
    aws: Clients,
    repo: tempfile::TempDir,
}

/// A seeded moto starting in the background (it takes seconds), for the next round.
fn next_moto() -> tokio::task::JoinHandle<Moto> {
    tokio::spawn(Moto::start(&[]))
}

/// Stops the moto that was starting for a round that will not come.
async fn discard(next: tokio::task::JoinHandle<Moto>) {
    next.abort();
    let _ = next.await; // the server, started or not, is killed as it drops
}

impl World {
    /// From the moto `next` brings up; `next` is replaced by the one for the round after.
    async fn empty(docker: &Docker, next: &mut tokio::task::JoinHandle<Moto>) -> World {
        dk::cleanup(docker, STACK, &CONTAINERS).await;
        let moto = std::mem::replace(next, next_moto()).await.unwrap();
        let aws = Clients::new(&moto.sdk_config().await);
        let world = World {
            moto,
            aws,
            repo: world_repo(),
        };
        let nothing = census(&world.aws, docker).await;
        assert!(
            nothing.declared.is_empty() && nothing.strays.is_empty(),
            "the world is not empty: {nothing:?}"
        );
        world
    }

    fn command(&self, command: &str, log: &Path) -> Command {
        stackwarden(command, self.repo.path(), &self.moto, log)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.repo
            .path()
            .join(format!("{}.log", name.replace(' ', "-")))
    }
}

/// Runs apply, SIGKILLed after `delay` unless it ended before. No apply may be refused by
/// the lease a killed apply left: on the host it ran on, a holder whose process is gone has
/// lost its lease at once (docs/daemon.md, "One actor: the lease").
async fn apply_killed_after(world: &World, name: &str, delay: Duration, story: &str) -> End {
    let log = world.log(name);
    let mut child = world.command("apply", &log).spawn().unwrap();
    let end = kill_after(&mut child, delay).await;
    let text = read(&log);
    assert!(
        !text.contains(REFUSED),
        "{name} was refused by the lease of an apply this test SIGKILLed, a process gone from \
         this host (src/cli.rs take_lease, src/reconcile/lease.rs Lease::acquire)\n{text}\n\
         --- so far ---\n{story}"
    );
    end
}

/// An apply SIGKILLed at a random instant of a converge from nothing, again and again over
/// the same world until one ends on its own; then from nothing again, until twenty kills
/// have landed. After each kill there is at most one of each thing the stack declares; the
/// apply that ends on its own converges whatever the kills left (exit 0, then `plan` exits
/// 0) with exactly one of each. A killed apply's lease never keeps the next one out.
#[tokio::test]
async fn kill_9_of_apply_at_random_points_never_leaves_a_duplicate() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    let window = cold_apply_time().await;
    let started = Instant::now();
    let mut story = String::new();
    let mut kills = 0;
    let mut round = 0;
    let mut next = next_moto();
    while kills < KILLS {
        round += 1;
        assert!(
            round <= KILLS * 3,
            "{round} rounds for {kills} kills: applies end before the kills land\n{story}"
        );
        let world = World::empty(&docker, &mut next).await;
        for attempt in 1.. {
            let name = format!("round {round} apply {attempt}");
            // Once the kills are in, the last apply is left alone.
            let delay = if kills < KILLS {
                random_delay(window)
            } else {
                CONVERGE
            };
            let end = apply_killed_after(&world, &name, delay, &story).await;
            let now = census(&world.aws, &docker).await;
            let _ = writeln!(story, "{name}: {delay:?} → {end:?}: {}", now.summary());
            let duplicates = now.duplicates();
            assert!(
                duplicates.is_empty(),
                "after {name} ({end:?} after {delay:?}): {duplicates:?}\n--- its log ---\n{}\n--- so far ---\n{story}",
                tail(&read(&world.log(&name)), 40)
            );
            match end {
                End::Killed => kills += 1,
                End::Exited(status) => {
                    assert!(
                        status.success(),
                        "{name} ended on its own without converging ({status}):\n{}\n--- so far ---\n{story}",
                        tail(&read(&world.log(&name)), 40)
                    );
                    let plan = run(world.command("plan", &world.log("plan"))).await;
                    assert_eq!(
                        plan.code(),
                        Some(0),
                        "plan after {name}:\n{}",
                        read(&world.log("plan"))
                    );
                    let wrong = now.not_exactly_one();
                    assert!(
                        wrong.is_empty(),
                        "not exactly one of each after {name}: {wrong:?}\n--- so far ---\n{story}"
                    );
                    break;
                }
            }
        }
    }
    eprintln!(
        "faults: {kills} applies killed within {window:?}, {round} converges from nothing, in {:?}\n{story}",
        started.elapsed()
    );
    discard(next).await;
    dk::cleanup(&docker, STACK, &CONTAINERS).await;
}

/// The daemon SIGKILLed at a random instant of a converge from nothing, restarted over the
/// same repository and host root and killed again until one converges before its kill is
/// due; then from nothing again, until twenty kills have landed in a converge. After each
/// kill there is at most one of each thing the stack declares; the daemon that converges
/// has exactly one of each, `plan` agrees, and SIGTERM stops it cleanly.
#[tokio::test]
async fn kill_9_of_the_daemon_during_a_converge_never_leaves_a_duplicate() {
    let _lock = dk::exclusive().await;
    let docker = dk::docker().await;
    // The daemon's converge is about the apply's; a restarted daemon takes the killed one's
    // lease over at once (its holder is gone from this host), a second covers that.
    let converge = cold_apply_time().await;
    let window = converge + Duration::from_secs(1);
    let started = Instant::now();
    let mut story = String::new();
    let mut kills = 0;
    let mut round = 0;
    let mut next = next_moto();
    while kills < KILLS {
        round += 1;
        assert!(
            round <= KILLS * 3,
            "{round} rounds for {kills} kills: daemons converge before the kills land\n{story}"
        );
        let world = World::empty(&docker, &mut next).await;
        let options = || DaemonOptions {
            aws_endpoint: Some(&world.moto.endpoint),
            scope: "all",
            resync: "30s",
            lease_ttl: "3s",
            ..Default::default()
        };
        for attempt in 1.. {
            let name = format!("round {round} daemon {attempt}");
            // The first daemon of a round has no lease to wait for.
            let window = if attempt == 1 { converge } else { window };
            let mut d = Daemon::start_in(world.repo.path(), options());
            let delay = random_delay(window);
            if kills >= KILLS {
                // The kills are in: this one is left alone.
                d.wait_until("a daemon left alone converges", CONVERGE, || {
                    converged(&d.status())
                });
            } else {
                tokio::time::sleep(delay).await;
            }
            let status = d.status();
            if converged(&status) {
                let now = census(&world.aws, &docker).await;
                let _ = writeln!(story, "{name}: converged: {}", now.summary());
                let wrong = now.not_exactly_one();
                assert!(
                    wrong.is_empty(),
                    "not exactly one of each once {name} converged: {wrong:?}\n--- so far ---\n{story}"
                );
                let plan = run(world.command("plan", &world.log("plan"))).await;
                assert_eq!(
                    plan.code(),
                    Some(0),
                    "plan next to {name}, converged:\n{}",
                    read(&world.log("plan"))
                );
                assert_eq!(d.terminate(), Some(0), "{}", d.log_tail());
                break;
            }
            d.kill9();
            let phase = status["phase"].as_str().unwrap_or("").to_string();
            if phase != "Standby" {
                kills += 1;
            }
            let now = census(&world.aws, &docker).await;
            let _ = writeln!(
                story,
                "{name}: killed after {delay:?} ({phase}): {}",
                now.summary()
            );
            let duplicates = now.duplicates();
            assert!(
                duplicates.is_empty(),
                "after {name} was killed after {delay:?} ({phase}): {duplicates:?}\n--- its log ---\n{}\n--- so far ---\n{story}",
                d.log_tail()
            );
        }
    }
    eprintln!(
        "faults: {kills} daemons killed within {window:?}, {round} converges from nothing, in {:?}\n{story}",
        started.elapsed()
    );
    discard(next).await;
    dk::cleanup(&docker, STACK, &CONTAINERS).await;
}

fn converged(status: &serde_json::Value) -> bool {
    status["phase"] == "Ready" && status["lastPass"]["result"] == "converged"
}

// ------------------------------------------------------------------------------------------
// A Docker engine of the test's own, which it may kill and restart.

/// A second dockerd on its own socket, data root and exec root (its own containerd), with
/// no bridge and no iptables rules, like the local world's: killing it touches nothing the
/// shared engine or other tests use. Stopped and its state removed on drop.
struct PrivateEngine {
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

impl PrivateEngine {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `unix://…`, for DOCKER_HOST.
    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    async fn start() -> PrivateEngine {
        let mut engine = PrivateEngine {
            dir: tempfile::tempdir().unwrap(),
            child: None,
            starts: 0,
        };
        engine.restart().await;
        engine
    }

    /// Starts dockerd over the same data root and waits until it answers.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "the private engine already runs");
        let dir = self.dir.path();
        // dockerd refuses to start over the pid file a killed one left.
        let _ = std::fs::remove_file(dir.join("docker.pid"));
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
            .arg(format!("--host={}", self.host()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts (Debian package docker.io; scripts/dev-env up installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.client().await.is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the private dockerd exited ({status}):\n{}",
                    tail(&read(&dir.join("dockerd.log")), 20)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the private dockerd did not answer:\n{}",
                tail(&read(&dir.join("dockerd.log")), 20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client, once the engine answers.
    async fn client(&self) -> Option<Docker> {
        let docker =
            Docker::connect_with_unix(&self.host(), 10, bollard::API_DEFAULT_VERSION).ok()?;
        docker.negotiate_version().await.ok()
    }

    /// SIGKILL: the engine crashes. Its containerd dies with it (dockerd starts it with a
    /// parent-death signal); a new dockerd refuses to start while the old one is not yet
    /// reaped, so this returns once it is gone.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let pid = std::fs::read_to_string(self.dir.path().join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(60);
            while process_state(pid).is_some() {
                if Instant::now() >= deadline {
                    if process_state(pid) != Some('Z') {
                        kill(pid, "-KILL");
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Copies the stub image from the shared engine (no registry is reachable).
    async fn load_stub_image(&self, from: &Docker) {
        let mut tar = Vec::new();
        let mut export = from.export_image(STUB_IMAGE);
        while let Some(chunk) = export.next().await {
            tar.extend_from_slice(&chunk.expect("the stub image can be exported"));
        }
        let to = self.client().await.expect("the private engine answers");
        let mut load = to.import_image(
            bollard::query_parameters::ImportImageOptions::default(),
            bollard::body_full(tar.into()),
            None,
        );
        while let Some(progress) = load.next().await {
            progress.expect("the stub image loads into the private engine");
        }
        to.inspect_image(STUB_IMAGE)
            .await
            .expect("the stub image is in the private engine");
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let dir = self.dir.path().to_path_buf();
        if let Some(mut c) = self.child.take() {
            // Its containers first, then a clean stop (it unmounts what it mounted).
            let host = self.host();
            if let Ok(out) = Command::new("docker")
                .args(["-H", &host, "ps", "-aq"])
                .output()
            {
                let ids = String::from_utf8_lossy(&out.stdout).into_owned();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["-H", &host, "rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
            kill(c.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // What a failed test can leave: containerd and container shims of this engine (their
        // command line names its directory), each with its container's first process.
        let ours = processes_naming(&dir);
        for pid in &ours {
            for child in children(*pid) {
                kill(child, "-KILL");
            }
            kill(*pid, "-KILL");
        }
        // dockerd bind-mounts its data root onto itself and leaves that mount behind;
        // network namespaces are mounted under its exec root.
        let mut mounts = mounts_under(&dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&m)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `kill <signal> <pid>`.
fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// The state letter of a process (`Z`: a zombie), `None` once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Processes whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The children of a process.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Mount points at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The stack's containers in `docker`, by name: running or not.
async fn running(docker: &Docker) -> BTreeMap<String, bool> {
    dk::stack_containers(docker, STACK)
        .await
        .into_iter()
        .map(|c| {
            let up = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            (dk::name_of(&c).unwrap_or_default(), up)
        })
        .collect()
}

fn all_running(containers: &BTreeMap<String, bool>) -> bool {
    let names: BTreeSet<&str> = containers.keys().map(String::as_str).collect();
    names == BTreeSet::from(CONTAINERS) && containers.values().all(|up| *up)
}

/// A Docker engine that really crashes (SIGKILL) and is started again under a running
/// daemon: the engine comes back with the stack's containers stopped (without live-restore
/// it stops what ran), and a person removes one of them meanwhile. The daemon — its resync
/// ten minutes away, so only the reconnect can wake it — reports the engine gone (503),
/// reconnects, re-lists and puts every container back: exactly one of each, all running.
#[tokio::test]
async fn the_docker_engine_restarted_under_a_running_daemon_is_reconnected_relisted_and_repaired() {
    // Alone with the engines: it timed out once while the shared engine's tests ran beside it
    // on a loaded two-core machine (18–21 s alone, with or without a release build beside).
    let _lock = dk::exclusive().await;
    let shared = dk::docker().await; // only read: the stub image is copied from it
    let mut engine = PrivateEngine::start().await;
    engine.load_stub_image(&shared).await;
    let moto = Moto::start(&[]).await;
    let mut d = Daemon::start(DaemonOptions {
        aws_endpoint: Some(&moto.endpoint),
        scope: "host",
        resync: "10m",
        docker_host: Some(engine.host()),
        ..Default::default()
    });
    let ready = |d: &Daemon| d.get("/readyz").map(|(c, _)| c == 200).unwrap_or(false);
    d.wait_until(
        "the stack converges on the private engine",
        CONVERGE,
        || converged(&d.status()) && ready(&d),
    );
    let before = running(&engine.client().await.unwrap()).await;
    assert!(all_running(&before), "{before:?}");

    // The engine crashes. The next pass (asked for: nothing else is due) finds it gone.
    engine.kill9();
    assert_eq!(d.post("/reconcile", Some(TOKEN)).unwrap().0, 202);
    d.wait_until("the daemon reports the engine gone", CONVERGE, || {
        d.get("/readyz")
            .map(|(c, b)| c == 503 && b.contains("Docker"))
            .unwrap_or(false)
    });
    assert_eq!(d.get("/healthz").unwrap().0, 200, "the daemon crashed");

    // The engine is started again; someone removes tempo as it comes back.
    engine.restart().await;
    let docker = engine.client().await.unwrap();
    let after_restart = running(&docker).await;
    dk::remove(&docker, "tempo").await;

    d.wait_until(
        "the daemon reconnects, re-lists and repairs",
        CONVERGE,
        || converged(&d.status()) && ready(&d),
    );
    let now = running(&docker).await;
    assert!(
        all_running(&now),
        "after the engine restart (it came back with {after_restart:?}): {now:?}\n{}",
        d.log_tail()
    );
    let mut c = Census::default();
    count_containers(&docker, &mut c).await;
    let duplicates = c.duplicates();
    assert!(duplicates.is_empty(), "{duplicates:?}");
    let status = d.status();
    let repairs: Vec<String> = status["audit"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["trigger"] != "startup")
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or("").to_string();
            format!(
                "{} {} ({}, {})",
                f("action"),
                f("resource"),
                f("trigger"),
                f("cause")
            )
        })
        .collect();
    assert_eq!(d.terminate(), Some(0), "{}", d.log_tail());
    eprintln!(
        "faults: the private engine came back with {after_restart:?}, tempo then removed; repaired: {repairs:?}"
    );
}
