//! The `stackwarden` command line: parses arguments, runs one command, returns the exit code.
//! The only module that turns errors into exit codes and text for people.

use crate::engine::{ApplyReport, Engine};
use crate::manifest;
use crate::model::Desired;
use crate::provider::aws::{self, AwsProvider};
use crate::provider::{DynProvider, Stats};
use crate::report;
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Keeps a self-hosted Grafana observability stack on AWS exactly as declared.
#[derive(Debug, Parser)]
#[command(name = "stackwarden", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text for people or JSON for log pipelines (filter: STACKWARDEN_LOG or
    /// RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the manifests: schema, references, values and policy. Exit 0 valid, 1 not.
    Validate(Common),
    /// Show what apply would change. Exit 0 no changes, 2 changes pending, 1 error.
    Plan(PlanArgs),
    /// Converge live state to the manifests. Exit 0 converged, 1 on failure.
    Apply(PlanArgs),
    /// Run as a daemon: watch, reconcile, serve status.
    Run(RunArgs),
    /// Print the IAM policy (JSON) one principal needs for this stack, scoped to its resources.
    IamPolicy(IamPolicyArgs),
    /// Create a minisign key pair for publish (secret) and the daemon (public).
    Keygen(KeygenArgs),
    /// Publish the environment's manifests, signed, to the stack's bucket; prints the new
    /// revision on stdout's last line. Exit 0 published, 1 not.
    Publish(PublishArgs),
    /// Read the host's status snapshot from the bucket. Exit 0 converged (at revision ≥
    /// --wait-revision), 2 not yet or drifted, 1 unreadable, stale or failed.
    Status(StatusArgs),
}

/// Options of keygen.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The directory to write stackwarden.key (secret, mode 0600) and stackwarden.pub into;
    /// existing keys are never replaced.
    #[arg(long)]
    pub out: PathBuf,
}

/// Options of publish.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Manifests and environment.
    #[command(flatten)]
    pub common: Common,
    /// The minisign secret key file (`stackwarden keygen`, or `minisign -G -W`); an
    /// encrypted one takes its password from STACKWARDEN_KEY_PASSWORD.
    #[arg(long, required_unless_present = "artifact")]
    pub key: Option<PathBuf>,
    /// Also (or, without --key, only) upload what a new instance starts from: the image
    /// (`docker save` tarball) or the static binary, under `<prefix>/artifacts/<sha256>`.
    /// Its digest goes on stdout (the revision, when --key publishes too, comes last); pin it
    /// in the Instance's `bootstrap.sha256`.
    #[arg(long)]
    pub artifact: Option<PathBuf>,
    /// The bucket (default: the environment's declared bucket).
    #[arg(long)]
    pub bucket: Option<String>,
    /// The prefix of the delivery objects in the bucket.
    #[arg(long, default_value = crate::source::DEFAULT_PREFIX)]
    pub prefix: String,
    /// How long the pointer stays fresh; after that, daemons keep it but report it stale.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub expires_in: std::time::Duration,
    /// The commit published (default: GITHUB_SHA). In a git work tree where a bundled file
    /// differs from HEAD (edited, staged, untracked), it is labelled `<commit>-dirty`.
    #[arg(long, env = "GITHUB_SHA")]
    pub commit: Option<String>,
    /// The CI run publishing (default: GITHUB_RUN_ID).
    #[arg(long, env = "GITHUB_RUN_ID")]
    pub run: Option<String>,
    /// Publish on the revision the hosts report in force (their status snapshot), when the
    /// pointer in the bucket is missing or does not verify with this key; publish says when.
    #[arg(long)]
    pub recover: bool,
}

/// Options of status.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Manifests and environment (the manifests only name the bucket; with --bucket, only
    /// --env is needed).
    #[command(flatten)]
    pub common: Common,
    /// The bucket (default: the environment's declared bucket).
    #[arg(long)]
    pub bucket: Option<String>,
    /// The prefix of the delivery objects in the bucket.
    #[arg(long, default_value = crate::source::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Wait until the host runs at least this revision (converged: exit 0), it fails, or
    /// --timeout passes.
    #[arg(long)]
    pub wait_revision: Option<u64>,
    /// How long --wait-revision waits.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// A snapshot older than this means the daemon stopped reporting (exit 1).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_age: std::time::Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusOutput::Text)]
    pub output: StatusOutput,
}

/// Output formats of status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusOutput {
    /// For people.
    Text,
    /// For machines: the verdict and the snapshot's summary.
    Json,
    /// For a CI job summary.
    Markdown,
}

/// Options of iam-policy.
#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    /// Manifests and environment.
    #[command(flatten)]
    pub common: Common,
    /// The principal: the CI role (plan and apply), the pull-request role (plan), or the
    /// host's instance role (the daemon's reads and its lease).
    #[arg(long = "for", value_enum)]
    pub principal: PolicyFor,
    /// The stack's AWS account (default: the account of the credentials in use, from STS).
    #[arg(long)]
    pub account: Option<String>,
    /// With `--for host`: grant the host every AWS write CI has too (never publishing), for a
    /// daemon run with `--aws-mode enforce`. Any container that reaches the instance role
    /// through IMDS can then make those writes (docs/iam.md): an explicit opt-in.
    #[arg(long)]
    pub allow_aws_writes: bool,
}

/// The principals `iam-policy` writes policies for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFor {
    /// The CI role: observe, every write, the lease.
    Ci,
    /// The pull-request role: observe only, no write action.
    Readonly,
    /// The instance role: observe and the lease.
    Host,
}

impl From<PolicyFor> for aws::permissions::Principal {
    fn from(p: PolicyFor) -> Self {
        match p {
            PolicyFor::Ci => aws::permissions::Principal::Ci,
            PolicyFor::Readonly => aws::permissions::Principal::Readonly,
            PolicyFor::Host => aws::permissions::Principal::Host,
        }
    }
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// The manifests directory.
    #[arg(short = 'f', long = "manifests", default_value = "manifests")]
    pub manifests: PathBuf,
    /// The environment whose values to use (manifests/environments/<env>.yaml).
    #[arg(long, env = "STACKWARDEN_ENV")]
    pub env: Option<String>,
    /// The repository root: every manifest, values and `source:` file must lie inside it
    /// (default: the manifests directory's git root, else the directory holding it).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

impl Common {
    /// Loads the manifests this command names.
    pub fn load(&self) -> Result<manifest::Loaded, manifest::LoadError> {
        manifest::load_in(&self.manifests, self.env.as_deref(), self.root.as_deref())
    }
}

/// Options of plan and apply.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Manifests and environment.
    #[command(flatten)]
    pub common: Common,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Print the API calls made, per service and operation, reads and writes apart.
    #[arg(long)]
    pub stats: bool,
    /// Root of the host's config files (defaults to the Stack's host.root).
    #[arg(long)]
    pub host_root: Option<PathBuf>,
    /// Which worlds to cover.
    #[arg(long, value_enum, default_value_t = Scope::All)]
    pub scope: Scope,
    /// plan: also compare the instance role's policies with `iam-policy --for host` and name
    /// the actions it lacks or holds beyond it (on stderr; the exit code stays the plan's).
    #[arg(long)]
    pub check_permissions: bool,
    /// Where the manifests come from.
    #[command(flatten)]
    pub from: SourceArgs,
}

/// Options of run.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Manifests and environment.
    #[command(flatten)]
    pub common: Common,
    /// Address of the status server (loopback by default: the page shows the stack's shape).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Root of the host's config files (defaults to the Stack's host.root).
    #[arg(long)]
    pub host_root: Option<PathBuf>,
    /// Which worlds to cover.
    #[arg(long, value_enum, default_value_t = Scope::All)]
    pub scope: Scope,
    /// How long the stack's lease lasts without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// A file holding the bearer token that `POST /reconcile` requires (or STACKWARDEN_TOKEN);
    /// without one the endpoint is off.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The page's address as people reach it (behind a proxy, say), for the links alerts
    /// carry; defaults to http://<listen>/.
    #[arg(long)]
    pub external_url: Option<String>,
    /// Where the manifests come from.
    #[command(flatten)]
    pub from: SourceArgs,
    /// Time between two polls of the source's pointer (one conditional GET each).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub source_interval: std::time::Duration,
    /// The most this daemon does to AWS resources, whatever the manifests say: `warn`
    /// reports and alerts AWS drift and never writes AWS. The host's daemon runs so (one
    /// writer per world: CI's apply writes AWS); unset, the manifests' modes apply.
    #[arg(long, value_enum)]
    pub aws_mode: Option<ModeArg>,
}

/// A mode as `--aws-mode` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Report only.
    Observe,
    /// Alert, never write.
    Warn,
    /// Repair and alert.
    Enforce,
}

impl From<ModeArg> for crate::model::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Observe => crate::model::Mode::Observe,
            ModeArg::Warn => crate::model::Mode::Warn,
            ModeArg::Enforce => crate::model::Mode::Enforce,
        }
    }
}

/// Where the manifests come from, besides -f (run, plan, apply).
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Where the manifests come from: a directory (as -f), or `s3://BUCKET[/PREFIX]` for the
    /// revisions `publish` signs into the stack's bucket (needs --env and --trust): `run`
    /// follows them, `plan` and `apply` take the newest good one once.
    #[arg(long)]
    pub source: Option<String>,
    /// The minisign public key published revisions must be signed with (never taken from the
    /// bucket).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Where the source's revisions are unpacked and the one in force is recorded (it
    /// survives restarts, so an older revision stays refused).
    #[arg(long, default_value = "/var/lib/stackwarden/source")]
    pub state_dir: PathBuf,
    /// The source bucket's region, when AWS_REGION does not say.
    #[arg(long, default_value = "us-east-1")]
    pub source_region: String,
}

impl SourceArgs {
    /// The remote source, if `--source` names one; a directory replaces -f in `common`.
    fn remote(
        &self,
        common: &mut Common,
        interval: std::time::Duration,
    ) -> anyhow::Result<Option<crate::reconcile::follow::SourceOptions>> {
        let Some(source) = self.source.clone() else {
            return Ok(None);
        };
        if !source.starts_with("s3://") {
            common.manifests = PathBuf::from(source);
            return Ok(None);
        }
        let (bucket, prefix) = crate::source::parse_url(&source).with_context(|| {
            format!("--source {source}: expected s3://BUCKET[/PREFIX] or a directory")
        })?;
        let env = common
            .env
            .clone()
            .context("--source s3://… follows one environment's revisions: give --env")?;
        let trust = self.trust.as_ref().context(
            "--source s3://… needs --trust FILE, the public key its revisions are signed with",
        )?;
        let trusted = crate::source::signing::TrustedKey::from_file(trust)
            .with_context(|| format!("reading the trusted key {}", trust.display()))?;
        Ok(Some(crate::reconcile::follow::SourceOptions {
            location: crate::source::Location::new(&bucket, &prefix, &env),
            trusted,
            state_dir: self.state_dir.clone(),
            interval,
            region: self.source_region.clone(),
        }))
    }
}

impl RunArgs {
    /// The remote source to follow, if `--source` names one; a directory replaces -f.
    fn source(&mut self) -> anyhow::Result<Option<crate::reconcile::follow::SourceOptions>> {
        self.from.remote(&mut self.common, self.source_interval)
    }
}

/// `plan`/`apply --source s3://…`: polls the pointer once, and points -f and --root at the
/// revision in force. A refused or unreachable newest revision leaves the last good one (as
/// the daemon would); with none in force, there is nothing to apply.
async fn take_source(args: &mut PlanArgs) -> anyhow::Result<()> {
    use crate::source::fetch::{self, Poll, Remote};
    let Some(opts) = args
        .from
        .remote(&mut args.common, std::time::Duration::ZERO)?
    else {
        return Ok(());
    };
    let url = opts.location.url();
    let config = aws::sdk_config(&opts.region).await;
    let mut remote = Remote::open(
        aws::s3_client(&config),
        fetch::Options::new(opts.location, opts.state_dir, opts.trusted),
    )
    .with_context(|| format!("opening the source's state for {url}"))?;
    let problem = match remote.poll(std::time::SystemTime::now()).await {
        Poll::Updated { .. } | Poll::Unchanged => None,
        Poll::Stale { revision, .. } => Some(format!("the pointer of revision {revision} expired")),
        Poll::Rejected { revision, reason } => Some(format!(
            "{} was refused: {reason}",
            revision.map_or_else(
                || "the newest revision".to_string(),
                |r| format!("revision {r}")
            )
        )),
        Poll::Unreachable { error } => Some(format!("the source cannot be read: {error}")),
    };
    let Some(in_force) = remote.in_force() else {
        anyhow::bail!(
            "no revision from {url} is in force: {}",
            problem.unwrap_or_else(|| "nothing published yet (run `stackwarden publish`)".into())
        );
    };
    if let Some(problem) = problem {
        eprintln!(
            "stackwarden: {problem}; revision {} stays in force",
            in_force.revision()
        );
    }
    eprintln!(
        "stackwarden: revision {} from {url} ({})",
        in_force.revision(),
        in_force.pointer.bundle.sha256
    );
    args.common.manifests = in_force.manifests.clone();
    args.common.root = Some(in_force.tree.clone());
    Ok(())
}

/// Output formats of plan and apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For machines.
    Json,
    /// A Markdown report for a CI job summary: verdict, changes, violations.
    Markdown,
    /// SARIF 2.1.0 for code scanning: policy violations and drift, at their manifest lines.
    Sarif,
}

pub use crate::plan::Scope;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(common) => validate(&common),
        Command::Plan(mut args) => converge(&mut args, false).await,
        Command::Apply(mut args) => converge(&mut args, true).await,
        Command::IamPolicy(args) => match iam_policy(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stackwarden: {e:#}");
                ExitCode::from(exit::ERROR)
            }
        },
        Command::Keygen(args) => match keygen(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stackwarden: {e:#}");
                ExitCode::from(exit::ERROR)
            }
        },
        Command::Publish(args) => match publish(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stackwarden: {e:#}");
                ExitCode::from(exit::ERROR)
            }
        },
        Command::Status(args) => match status(&args).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("stackwarden: {e:#}");
                ExitCode::from(exit::ERROR)
            }
        },
        Command::Run(args) => match daemon(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stackwarden: {e:#}");
                ExitCode::from(exit::ERROR)
            }
        },
    }
}

/// `iam-policy`: the policy document one principal needs, derived from the table of calls.
async fn iam_policy(args: &IamPolicyArgs) -> anyhow::Result<()> {
    let loaded = args.common.load().context("loading the manifests")?;
    let mut desired = loaded.desired;
    let account =
        match &args.account {
            Some(account) => account.clone(),
            None => {
                use crate::reconcile::worlds::{Connect, Live};
                let world = Live
                    .aws(&desired.stack.region, Arc::new(Stats::default()))
                    .await;
                world.account.account_id().await.context(
                    "finding the AWS account of the credentials in use (or pass --account)",
                )?
            }
        };
    manifest::fill_runtime(&mut desired, &account);
    let scope = aws::permissions::Scope::of(&desired, &account)
        .context("deriving where the backends keep their data")?;
    let principal = match (args.principal, args.allow_aws_writes) {
        (PolicyFor::Host, true) => aws::permissions::Principal::HostWritingAws,
        (_, true) => anyhow::bail!(
            "--allow-aws-writes widens the host's policy only: use it with --for host (CI's policy already writes AWS)"
        ),
        (p, false) => p.into(),
    };
    let document = aws::permissions::policy(principal, &scope);
    let text = serde_json::to_string_pretty(&document).context("rendering the policy")?;
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        // The reader went away (`| head`): nothing left to tell it.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the policy to stdout"),
    }
}

fn validate(common: &Common) -> ExitCode {
    match common.load() {
        Ok(loaded) => {
            let d = &loaded.desired;
            let grafana = crate::grafana::check(d);
            if !grafana.diagnostics.is_empty() {
                eprintln!("{}", manifest::Diagnostics(grafana.diagnostics));
                return ExitCode::from(1);
            }
            for w in &grafana.warnings {
                eprintln!("warning: {w}");
            }
            for w in manifest::warnings(d) {
                eprintln!("warning: {w}");
            }
            let now = std::time::SystemTime::now();
            for a in &d.stack.acknowledgements {
                if !a.active(now) {
                    eprintln!(
                        "warning: Stack/{} spec.acknowledgements: the acknowledgement of {} expired at {}: its drift is repaired and alerted again\n    fix: remove it, or renew it with a new reason",
                        d.stack_name,
                        a.resource,
                        a.expires.as_deref().unwrap_or("?")
                    );
                }
            }
            println!(
                "{}: valid for environment `{}`: Stack/{} and {} resources in {} files, all {} policy rules pass",
                common.manifests.display(),
                d.environment,
                d.stack_name,
                d.resources.len(),
                loaded.files,
                crate::policy::RULES.len()
            );
            println!(
                "grafana: {} dashboards ({} panels), {} alert rules, {} queries checked against the series catalogue",
                grafana.dashboards, grafana.panels, grafana.rules, grafana.queries
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Exit codes of `plan` (docs/contract.md, "Commands").
mod exit {
    pub const NO_CHANGES: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const CHANGES_PENDING: u8 = 2;
}

/// `plan` (apply = false) and `apply`.
async fn converge(args: &mut PlanArgs, apply: bool) -> ExitCode {
    if let Err(e) = take_source(args).await {
        eprintln!("stackwarden: {e:#}");
        return ExitCode::from(exit::ERROR);
    }
    let args = &*args;
    let mut desired = match args.common.load() {
        Ok(loaded) => loaded.desired,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let stats = Arc::new(Stats::default());
    let engine = match build_engine(args, &mut desired, &stats).await {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("stackwarden: {e:#}");
            return ExitCode::from(exit::ERROR);
        }
    };
    if args.check_permissions
        && !apply
        && let Err(e) = check_permissions(&desired).await
    {
        eprintln!("stackwarden: {e:#}");
        return ExitCode::from(exit::ERROR);
    }
    let code = if apply {
        let lease = match take_lease(args, &desired).await {
            Ok(lease) => lease,
            Err(e) => {
                eprintln!("stackwarden: {e:#}");
                return ExitCode::from(exit::ERROR);
            }
        };
        // Renewed while the apply runs, so its TTL can stay short: a killed apply holds
        // the stack up for one TTL at most (none at all for a later run on the same host).
        let renewal = lease.clone().map(|lease| {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(APPLY_LEASE_TTL / 3).await;
                    if let Err(e) = lease.acquire(std::time::SystemTime::now()).await {
                        tracing::warn!(error = %e, "renewing the apply's lease failed; retrying");
                    }
                }
            })
        });
        let mut report = engine.apply(&desired).await;
        // A transient failure (a name taken since the observe, a throttled or unreachable
        // API) is observed again and retried with backoff before apply gives up.
        for attempt in 1..=APPLY_RETRIES {
            if !report.worth_retrying() {
                break;
            }
            let wait = std::time::Duration::from_secs(1 << (attempt - 1));
            eprintln!(
                "stackwarden: {} step(s) failed transiently; observing again in {}s (retry {attempt} of {APPLY_RETRIES})",
                report.failures().count(),
                wait.as_secs()
            );
            tokio::time::sleep(wait).await;
            let retry = engine.apply(&desired).await;
            report = report.then(retry);
        }
        if let Some(renewal) = renewal {
            renewal.abort();
        }
        if let Some(lease) = lease
            && let Err(e) = lease.release().await
        {
            eprintln!("stackwarden: releasing the lease failed (it lapses by itself): {e}");
        }
        print_apply(&report, &desired, args.output);
        if report.converged() {
            exit::NO_CHANGES
        } else {
            exit::ERROR
        }
    } else {
        let plan = engine.plan(&desired).await;
        match args.output {
            Output::Text => print!("{plan}"),
            Output::Json => println!("{}", to_json(&plan)),
            Output::Markdown => print!("{}", report::markdown::render(&plan, &desired)),
            Output::Sarif => println!("{}", report::sarif::render(&plan, &desired, &work_dir())),
        }
        if plan.is_incomplete() {
            exit::ERROR
        } else if plan.has_changes() {
            exit::CHANGES_PENDING
        } else {
            exit::NO_CHANGES
        }
    };
    if args.stats {
        eprint!("{stats}");
    }
    ExitCode::from(code)
}

/// `plan --check-permissions`: each observed instance role against the host policy.
async fn check_permissions(desired: &Desired) -> anyhow::Result<()> {
    use crate::provider::Provider;
    use aws::permissions::{Principal, compare};
    let config = aws::sdk_config(&desired.stack.region).await;
    let provider = AwsProvider::new(&config, Arc::new(Stats::default()));
    let observed = provider
        .observe(desired)
        .await
        .context("observing the instance profile's role")?;
    if observed.iam.is_empty() {
        eprintln!("permissions: no instance profile is declared; nothing to check");
    }
    for (lookup, role) in &observed.iam {
        let Some(role) = role else {
            eprintln!(
                "permissions: Lookup/{lookup}: the instance profile has no role (or IAM is not readable)"
            );
            continue;
        };
        let documents: Vec<String> = role.policies.iter().map(|p| p.document.clone()).collect();
        let c = compare(&documents, Principal::Host)
            .with_context(|| format!("reading the policies of role {}", role.name))?;
        if c.lacking.is_empty() && c.beyond.is_empty() {
            eprintln!(
                "permissions: role {} holds exactly the actions of `iam-policy --for host`",
                role.name
            );
        }
        if !c.lacking.is_empty() {
            eprintln!(
                "permissions: role {} lacks {} (grant `iam-policy --for host`)",
                role.name,
                c.lacking.join(", ")
            );
        }
        if !c.beyond.is_empty() {
            eprintln!(
                "permissions: role {} holds beyond `iam-policy --for host`: {}",
                role.name,
                c.beyond.join(", ")
            );
        }
    }
    Ok(())
}

/// `apply` takes the stack's lease for its run, like a daemon: while another actor holds it,
/// apply refuses and names the holder. Host-only applies and a stack whose bucket does not
/// exist yet have nothing to hold a lease in and go ahead.
async fn take_lease(
    args: &PlanArgs,
    desired: &Desired,
) -> anyhow::Result<Option<crate::reconcile::lease::Lease>> {
    use crate::reconcile::lease::{Holding, Lease, identity};
    if args.scope == Scope::Host {
        return Ok(None);
    }
    let Some((_, bucket)) = desired.buckets().next() else {
        return Ok(None);
    };
    let config = aws::sdk_config(&desired.stack.region).await;
    let s3 = aws::s3_client(&config);
    let lease = Lease::new(
        s3,
        bucket.name.clone(),
        &desired.stack_name,
        &desired.environment,
        crate::reconcile::lease::LeaseScope::Aws,
        identity("apply"),
        APPLY_LEASE_TTL,
    );
    // No clock says a lease lapsed: apply watches it. A holder that renews is alive (apply
    // gives up at once); one that does not within its TTL is gone, and the lease is taken.
    let watching = std::time::Instant::now();
    loop {
        match lease
            .acquire(std::time::SystemTime::now())
            .await
            .context("checking the stack's lease")?
        {
            Holding::Held { .. } => return Ok(Some(lease)),
            Holding::NoBucket => return Ok(None),
            Holding::Other { holder, expires } => {
                if lease.renewal_seen() || watching.elapsed() > LEASE_WATCH_LIMIT {
                    anyhow::bail!(
                        "the stack's lease is held by {holder}, who renews it (it lapses {} at the earliest): another actor is reconciling this stack, so apply does nothing (stop it, or let it converge and run plan)",
                        crate::status::Timestamp(expires)
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// The longest `apply` watches a lease held by another before giving up: past the longest
/// TTL a holder may declare (an apply's own, 30 s), a holder that never renewed has lapsed.
const LEASE_WATCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(45);

/// How often `apply` observes again and retries steps that failed transiently (after 1 s,
/// then 2 s) before it gives up and exits 1.
const APPLY_RETRIES: u32 = 2;

/// An apply's lease, renewed every third of it while the apply runs: a crashed apply blocks
/// daemons (on other hosts; on its own host they see it is gone) for at most this long.
const APPLY_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects the providers the scope asks for and fills the run-time values they supply.
async fn build_engine(
    args: &PlanArgs,
    desired: &mut Desired,
    stats: &Arc<Stats>,
) -> anyhow::Result<Engine> {
    use crate::reconcile::worlds::{Connect, Live};
    let mut providers: Vec<Arc<dyn DynProvider>> = Vec::new();
    let needs_account = !desired.unresolved_runtime().is_empty();
    if args.scope != Scope::Host || needs_account {
        let world = Live.aws(&desired.stack.region, stats.clone()).await;
        let account = world.account.account_id().await.with_context(|| {
            let names: Vec<String> = desired
                .unresolved_runtime()
                .iter()
                .map(|id| id.to_string())
                .collect();
            format!(
                "finding the AWS account of the credentials in use ({} need ${{account}}; nothing was written)",
                names.join(", ")
            )
        })?;
        manifest::fill_runtime(desired, &account);
        if args.scope != Scope::Host {
            providers.push(world.provider);
        }
    }
    let unresolved = desired.unresolved_runtime();
    if !unresolved.is_empty() {
        let names: Vec<String> = unresolved.iter().map(|id| id.to_string()).collect();
        anyhow::bail!(
            "{} still hold an unresolved ${{account}}; refusing to render them",
            names.join(", ")
        );
    }
    if args.scope != Scope::Aws {
        let root = args
            .host_root
            .clone()
            .unwrap_or_else(|| desired.stack.host.root.clone());
        let world = Live
            .host(root, stats.clone(), None)
            .await
            .context("connecting to the Docker engine (DOCKER_HOST)")?;
        providers.push(world.provider);
    }
    Ok(Engine::shared(providers))
}

/// Reads the reconcile token: the file wins over the environment; blank means none.
fn read_token(args: &RunArgs) -> anyhow::Result<Option<Arc<str>>> {
    let raw = match &args.token_file {
        Some(path) => match manifest::secret::read_file(path) {
            Ok(token) => Some(token),
            Err(manifest::secret::SecretProblem::Empty(_)) => None,
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("reading the token file {}", path.display()));
            }
        },
        None => std::env::var("STACKWARDEN_TOKEN").ok(),
    };
    Ok(raw
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .map(Arc::from))
}

/// `run`: the reconcile loop and the HTTP server until SIGINT or SIGTERM.
async fn daemon(mut args: RunArgs) -> anyhow::Result<()> {
    use crate::reconcile::{Controller, Options};
    let scope = args.scope;
    let token = read_token(&args)?;
    let source = args.source()?;
    let (controller, handle) = Controller::new(Options {
        manifests: args.common.manifests.clone(),
        env: args.common.env.clone(),
        root: args.common.root.clone(),
        host_root: args.host_root.clone(),
        scope,
        lease_ttl: args.lease_ttl,
        page_url: args
            .external_url
            .clone()
            .unwrap_or_else(|| format!("http://{}/", args.listen)),
        source,
        aws_mode: args.aws_mode.map(Into::into),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the status server to {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    eprintln!("stackwarden: status on http://{addr}/ (JSON /status, /metrics); Ctrl-C stops");
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the status server listens beyond loopback");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = crate::server::router(crate::server::AppState {
        handle,
        scope,
        token,
    });
    let mut server_stop = stop_rx.clone();
    // The status server runs on a thread of its own: a flood of requests (a dashboard left
    // open, a scraper gone wild) then cannot take the reconcile loop's time, and a long pass
    // cannot keep /healthz waiting. The cost is one thread: its stack and malloc arena.
    let listener = listener
        .into_std()
        .context("handing the status listener to its thread")?;
    let server = std::thread::Builder::new()
        .name("status-server".to_string())
        .spawn(move || -> std::io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = server_stop.wait_for(|s| *s).await;
                    })
                    .await
            })
        })
        .context("starting the status server's thread")?;
    let controller = tokio::spawn(controller.run(stop_rx));
    wait_for_signal().await;
    tracing::info!("signal received: finishing the pass in flight, releasing the lease");
    let _ = stop_tx.send(true);
    controller.await.context("the reconcile loop panicked")?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the status server panicked"))?
        .context("the status server failed")?;
    Ok(())
}

/// Resolves at SIGINT or SIGTERM.
async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn print_apply(report: &ApplyReport, desired: &Desired, output: Output) {
    match output {
        Output::Text => {}
        Output::Json => {
            println!("{}", to_json(report));
            return;
        }
        Output::Markdown => {
            let outcomes: Vec<report::Outcome<'_>> = report
                .outcomes
                .iter()
                .map(|o| report::Outcome {
                    change: &o.change,
                    error: o.error.as_deref(),
                })
                .collect();
            print!(
                "{}",
                report::markdown::render_apply(&report.plan, desired, &outcomes)
            );
            return;
        }
        Output::Sarif => {
            println!(
                "{}",
                report::sarif::render(&report.plan, desired, &work_dir())
            );
            return;
        }
    }
    let plan = &report.plan;
    for p in &plan.problems {
        println!("error: {p}");
    }
    for u in &plan.unobserved {
        println!(
            "? {} not observed ({}): {}",
            u.id,
            u.class.as_str(),
            u.error
        );
    }
    for v in &plan.violations {
        println!("! {v}");
    }
    for c in plan.changes.iter().filter(|c| !c.mode.repairs()) {
        println!("{c}");
    }
    for o in &report.outcomes {
        // The outcome belongs on the change's headline; its field lines follow.
        let text = o.change.to_string();
        let (head, fields) = text.split_once('\n').unwrap_or((&text, ""));
        match &o.error {
            None => println!("{head} ... done"),
            Some(e) => println!("{head} ... FAILED: {e}"),
        }
        if !fields.is_empty() {
            println!("{fields}");
        }
    }
    let failed: Vec<String> = report.failures().map(|o| o.change.id.to_string()).collect();
    if !failed.is_empty() {
        println!(
            "Apply failed: {} of {} changes failed ({}).",
            failed.len(),
            report.outcomes.len(),
            failed.join(", ")
        );
    } else if plan.is_incomplete() {
        println!("Apply incomplete: some live state could not be observed; the rest was applied.");
    } else if report.outcomes.is_empty() {
        println!("No changes. Live state matches the manifests.");
    } else {
        println!("Apply complete: {} changes applied.", report.outcomes.len());
    }
}

/// Where SARIF paths are relative to: the working directory (the repository root in CI).
fn work_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing our own plain data cannot fail; an empty object is the safe fallback.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string())
}

/// `keygen`: a new minisign key pair.
fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    use crate::source::signing;
    let (secret, public) = signing::generate(&args.out).context("creating the key pair")?;
    let key = signing::SigningKey::from_file(&secret).context("reading the new key back")?;
    eprintln!(
        "stackwarden: key {} written: {} (secret: a CI secret for publish) and {} (for the daemon's --trust)",
        key.id(),
        secret.display(),
        public.display()
    );
    Ok(())
}

/// The bucket and environment delivery commands use: `--bucket` and `--env` when both are
/// given (no manifests needed), else the environment's declared bucket, its `${account}`
/// filled from the credentials in use.
async fn delivery_target(
    common: &Common,
    bucket: Option<&str>,
) -> anyhow::Result<(String, String, aws_config::SdkConfig)> {
    if let (Some(bucket), Some(env)) = (bucket, common.env.as_deref()) {
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_string());
        return Ok((
            bucket.to_string(),
            env.to_string(),
            aws::sdk_config(&region).await,
        ));
    }
    let mut desired = common.load().context("loading the manifests")?.desired;
    let config = aws::sdk_config(&desired.stack.region).await;
    let bucket = match bucket {
        Some(b) => b.to_string(),
        None => {
            if !desired.unresolved_runtime().is_empty() {
                let account = AwsProvider::new(&config, Arc::new(Stats::default()))
                    .account_id()
                    .await
                    .context(
                        "finding the AWS account of the credentials in use (or pass --bucket)",
                    )?;
                manifest::fill_runtime(&mut desired, &account);
            }
            desired
                .buckets()
                .next()
                .map(|(_, b)| b.name.clone())
                .context("the environment declares no bucket: pass --bucket")?
        }
    };
    Ok((bucket, desired.environment.clone(), config))
}

/// A hint for an S3 refusal: which policy grants what the command needs.
fn access_hint(e: &crate::source::S3Error, policy: &str) -> String {
    if e.is_access_denied() {
        format!(" (the credentials in use lack it: grant `stackwarden iam-policy --for {policy}`)")
    } else {
        String::new()
    }
}

/// The commit label of a bundle: as given, or `<commit>-dirty` when files it holds are not
/// as committed. A label is how a person finds the source of what a host runs; one naming a
/// commit that does not hold these bytes would send them to the wrong code. Labelled rather
/// than refused: a hotfix published by hand from a work tree is legitimate, and says so.
fn publisher_commit(
    commit: String,
    built: &crate::source::bundle::Bundle,
) -> anyhow::Result<String> {
    use crate::source::provenance;
    let Some(changed) = provenance::uncommitted(&built.root, &built.read_from)
        .context("telling whether the bundled files are committed")?
    else {
        return Ok(commit);
    };
    let label = provenance::label(&commit, &changed);
    if !changed.is_empty() {
        const SHOWN: usize = 5;
        let mut names = changed
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if changed.len() > SHOWN {
            names.push_str(&format!(", and {} more", changed.len() - SHOWN));
        }
        eprintln!(
            "stackwarden: {} bundled file(s) differ from the commit ({names}): labelled {label}",
            changed.len()
        );
    }
    Ok(label)
}

/// `publish`: validate, bundle, sign, upload, advance the pointer; the revision on stdout.
async fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    use crate::source::{Location, bundle, pointer::Publisher, publish};
    // Hosts refuse a pointer fresh for longer than the horizon: never write one.
    let horizon = crate::source::fetch::MAX_EXPIRY_HORIZON;
    if args.expires_in > horizon {
        anyhow::bail!(
            "--expires-in {} is beyond the {}-day horizon hosts accept; choose at most {}d",
            humantime::format_duration(args.expires_in),
            horizon.as_secs() / 86_400,
            horizon.as_secs() / 86_400
        );
    }
    // The artifact first: a revision published after it may declare its digest, and must
    // never point a new instance at bytes not there yet.
    if let Some(path) = &args.artifact {
        let (bucket, env, config) = delivery_target(&args.common, args.bucket.as_deref()).await?;
        let location = Location::new(&bucket, &args.prefix, &env);
        let s3 = aws::s3_client(&config);
        let up = match crate::source::artifact::upload(&s3, &location, path, aws::transfer_timeouts)
            .await
        {
            Ok(up) => up,
            Err(crate::source::artifact::ArtifactError::S3(e)) => {
                let hint = access_hint(&e, "ci");
                return Err(anyhow::Error::new(e).context(format!("uploading the artifact{hint}")));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("uploading the artifact")),
        };
        eprintln!(
            "stackwarden: artifact {} ({} bytes) at s3://{bucket}/{}{}",
            path.display(),
            up.bytes,
            up.key,
            if up.uploaded {
                ""
            } else {
                ", already in the bucket"
            }
        );
        println!("sha256:{}", up.sha256);
    }
    let Some(key_file) = &args.key else {
        return Ok(());
    };
    // The key first: a wrong path fails before any work or call.
    let key = crate::source::signing::SigningKey::from_file(key_file)
        .context("reading the signing key")?;
    let built = bundle::build(
        &args.common.manifests,
        args.common.env.as_deref(),
        args.common.root.as_deref(),
    )?;
    let commit = match args.commit.clone().filter(|c| !c.is_empty()) {
        Some(commit) => Some(publisher_commit(commit, &built)?),
        None => None,
    };
    let (bucket, env, config) = delivery_target(&args.common, args.bucket.as_deref()).await?;
    if env != built.index.env {
        anyhow::bail!(
            "--env {env} and the bundle's environment {} differ",
            built.index.env
        );
    }
    if ["bundles", "lease"].contains(&env.as_str()) {
        anyhow::bail!(
            "an environment named `{env}` would share its objects with the {env} prefix; rename it"
        );
    }
    let location = Location::new(&bucket, &args.prefix, &env);
    let s3 = aws::s3_client(&config);
    let published = match publish::publish(
        &s3,
        publish::Request {
            location: &location,
            bundle: &built,
            key: &key,
            publisher: Publisher {
                commit,
                run: args.run.clone().filter(|r| !r.is_empty()),
            },
            expires_in: args.expires_in,
            now: std::time::SystemTime::now(),
            recover: args.recover,
        },
    )
    .await
    {
        Ok(p) => p,
        Err(publish::PublishError::S3(e)) => {
            let hint = access_hint(&e, "ci");
            return Err(anyhow::Error::new(e).context(format!("publishing{hint}")));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("publishing")),
    };
    eprintln!(
        "stackwarden: published {} files ({} bytes, sha256 {}{}) as revision {} of {} (was {}), expires {}",
        built.files.len(),
        built.bytes.len(),
        built.sha256,
        if published.uploaded {
            ""
        } else {
            ", already in the bucket"
        },
        published.revision,
        location.pointer_key(),
        published
            .previous
            .map(|p| p.to_string())
            .unwrap_or_else(|| "none".to_string()),
        published.pointer.expires_at
    );
    println!("{}", published.revision);
    Ok(())
}

/// How often `status --wait-revision` reads the snapshot again.
const STATUS_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// `status`: the host's snapshot, judged; waits for a revision when asked.
async fn status(args: &StatusArgs) -> anyhow::Result<u8> {
    use crate::source::{Location, snapshot};
    let (bucket, env, config) = delivery_target(&args.common, args.bucket.as_deref()).await?;
    let location = Location::new(&bucket, &args.prefix, &env);
    let s3 = aws::s3_client(&config);
    let deadline = tokio::time::Instant::now() + args.timeout;
    let (verdict, snapshot) = loop {
        let (verdict, snapshot) = match snapshot::read_snapshot(&s3, &location).await {
            Ok(value) => {
                let v = snapshot::judge(
                    &value,
                    args.wait_revision,
                    std::time::SystemTime::now(),
                    args.max_age,
                );
                (v, Some(value))
            }
            Err(e) => {
                let hint = match &e {
                    snapshot::SnapshotError::S3(s) => access_hint(s, "readonly"),
                    _ => String::new(),
                };
                (
                    snapshot::Verdict::Unreadable {
                        why: format!("{e}{hint}"),
                    },
                    None,
                )
            }
        };
        let now = tokio::time::Instant::now();
        if args.wait_revision.is_none() || verdict.is_final() || now >= deadline {
            break (verdict, snapshot);
        }
        tokio::time::sleep(STATUS_POLL.min(deadline - now)).await;
    };
    let code = verdict.exit_code();
    let key = format!("s3://{}/{}", location.bucket, location.status_key());
    let text = match args.output {
        StatusOutput::Json => to_json(&serde_json::json!({
            "snapshot": key,
            "exitCode": code,
            "verdict": verdict,
            "summary": snapshot.as_ref().map(status_summary),
        })),
        StatusOutput::Text => status_text(&env, &key, &verdict, snapshot.as_ref()),
        StatusOutput::Markdown => status_markdown(&env, &key, &verdict, snapshot.as_ref()),
    };
    println!("{text}");
    Ok(code)
}

/// The parts of a snapshot `status` reports.
fn status_summary(s: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "writtenAt": s["writtenAt"],
        "phase": s["phase"],
        "revision": s["source"]["revision"],
        "digest": s["source"]["digest"],
        "publisher": s["source"]["publisher"],
        "publishedAt": s["source"]["publishedAt"],
        "sourceError": s["source"]["lastError"],
        "lastPass": s["lastPass"],
        "errors": s["errors"],
        "violations": s["violations"].as_array().map(|v| v.len()).unwrap_or(0),
    })
}

fn verdict_line(v: &crate::source::snapshot::Verdict) -> String {
    use crate::source::snapshot::Verdict;
    let rev = |r: &Option<u64>| {
        r.map(|r| format!("revision {r}"))
            .unwrap_or_else(|| "no revision".to_string())
    };
    match v {
        Verdict::Converged { revision } => format!("converged at {}", rev(revision)),
        Verdict::NotYet {
            revision,
            waiting_for,
        } => format!(
            "not yet: {} in force, waiting for {waiting_for}",
            rev(revision)
        ),
        Verdict::Drifted { revision, result } => {
            format!("not converged at {}: last pass {result}", rev(revision))
        }
        Verdict::Failed { revision, why } => format!("failed at {}: {why}", rev(revision)),
        Verdict::Stale { age_seconds } => {
            format!("stale: the snapshot is {age_seconds} s old; the daemon stopped reporting")
        }
        Verdict::Unreadable { why } => format!("unreadable: {why}"),
    }
}

fn status_text(
    env: &str,
    key: &str,
    verdict: &crate::source::snapshot::Verdict,
    snapshot: Option<&serde_json::Value>,
) -> String {
    let mut out = format!("{env}: {} ({key})", verdict_line(verdict));
    if let Some(s) = snapshot {
        let sum = status_summary(s);
        let pass = &sum["lastPass"];
        out.push_str(&format!(
            "
written {}, phase {}, digest {}, commit {}",
            sum["writtenAt"].as_str().unwrap_or("?"),
            sum["phase"].as_str().unwrap_or("?"),
            sum["digest"].as_str().unwrap_or("-"),
            sum["publisher"]["commit"].as_str().unwrap_or("-"),
        ));
        if pass.is_object() {
            out.push_str(&format!(
                "
last pass: {} ({} drifts found, {} repairs, {} writes)",
                pass["result"].as_str().unwrap_or("?"),
                pass["driftsFound"],
                pass["repairs"],
                pass["writes"]
            ));
        }
        for e in sum["errors"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "
error: {}",
                e.as_str().unwrap_or_default()
            ));
        }
        if let Some(e) = sum["sourceError"].as_str() {
            out.push_str(&format!(
                "
source: {e}"
            ));
        }
    }
    out
}

fn status_markdown(
    env: &str,
    key: &str,
    verdict: &crate::source::snapshot::Verdict,
    snapshot: Option<&serde_json::Value>,
) -> String {
    let cell = |v: &serde_json::Value| -> String {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        text.replace('|', "\\|").replace(['\n', '\r'], " ")
    };
    let mut out = format!(
        "## stackwarden status: `{env}`\n\n**{}**\n\nSnapshot: `{key}`\n",
        verdict_line(verdict).replace('|', "\\|")
    );
    if let Some(s) = snapshot {
        let sum = status_summary(s);
        let pass = &sum["lastPass"];
        out.push_str("\n| revision | commit | phase | last pass | drifts found | repairs | written |\n|---|---|---|---|---|---|---|\n");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&sum["revision"]),
            cell(&sum["publisher"]["commit"]),
            cell(&sum["phase"]),
            cell(&pass["result"]),
            cell(&pass["driftsFound"]),
            cell(&pass["repairs"]),
            cell(&sum["writtenAt"]),
        ));
        let errors: Vec<String> = sum["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(cell)
            .collect();
        if !errors.is_empty() {
            out.push_str("\n### Failures\n\n");
            for e in errors {
                out.push_str(&format!("- {e}\n"));
            }
        }
    }
    out
}
