//! The `stackwarden` command line: parses arguments, runs one command, returns the exit code.
//! The only module that turns errors into exit codes and text for people.

use crate::engine::{ApplyReport, Engine};
use crate::manifest;
use crate::model::{Desired, Mode};
use crate::provider::aws::{self, AwsProvider};
use crate::provider::host::HostProvider;
use crate::provider::{DynProvider, Stats};
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
}

/// Options of run.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Manifests and environment.
    #[command(flatten)]
    pub common: Common,
    /// Address of the status server.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: String,
}

/// Output formats of plan and apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For machines.
    Json,
}

/// Which worlds plan and apply cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    /// AWS and the host.
    All,
    /// AWS only (CI, where the host's Docker engine is not at hand).
    Aws,
    /// The host only: containers and files (on the instance itself).
    Host,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(common) => validate(&common),
        Command::Plan(args) => converge(&args, false).await,
        Command::Apply(args) => converge(&args, true).await,
        Command::Run(_) => {
            eprintln!("stackwarden run: the daemon is not implemented yet; use plan or apply");
            ExitCode::from(1)
        }
    }
}

fn validate(common: &Common) -> ExitCode {
    match manifest::load(&common.manifests, common.env.as_deref()) {
        Ok(loaded) => {
            let d = &loaded.desired;
            println!(
                "{}: valid for environment `{}`: Stack/{} and {} resources in {} files, all {} policy rules pass",
                common.manifests.display(),
                d.environment,
                d.stack_name,
                d.resources.len(),
                loaded.files,
                crate::policy::RULES.len()
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
async fn converge(args: &PlanArgs, apply: bool) -> ExitCode {
    let mut desired = match manifest::load(&args.common.manifests, args.common.env.as_deref()) {
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
    let code = if apply {
        let report = engine.apply(&desired).await;
        print_apply(&report, args.output);
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
        }
        if !plan.errors.is_empty() {
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

/// Connects the providers the scope asks for and fills the run-time values they supply.
async fn build_engine(
    args: &PlanArgs,
    desired: &mut Desired,
    stats: &Arc<Stats>,
) -> anyhow::Result<Engine> {
    let mut providers: Vec<Box<dyn DynProvider>> = Vec::new();
    if args.scope != Scope::Host {
        let config = aws::sdk_config(&desired.stack.region).await;
        let provider = AwsProvider::new(&config, stats.clone());
        let account = provider
            .account_id()
            .await
            .context("finding the AWS account of the credentials in use")?;
        manifest::fill_runtime(desired, &account);
        providers.push(Box::new(provider));
    }
    if args.scope != Scope::Aws {
        let root = args
            .host_root
            .clone()
            .unwrap_or_else(|| desired.stack.host.root.clone());
        let provider = HostProvider::connect(root, stats.clone())
            .await
            .context("connecting to the Docker engine (DOCKER_HOST)")?;
        providers.push(Box::new(provider));
    }
    Ok(Engine::new(providers))
}

fn print_apply(report: &ApplyReport, output: Output) {
    if output == Output::Json {
        println!("{}", to_json(report));
        return;
    }
    let plan = &report.plan;
    for e in &plan.errors {
        println!("error: {e}");
    }
    for v in &plan.violations {
        println!("! {v}");
    }
    for c in plan.changes.iter().filter(|c| c.mode == Mode::Observe) {
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
    } else if !plan.errors.is_empty() {
        println!("Apply incomplete: some providers could not observe live state.");
    } else if report.outcomes.is_empty() {
        println!("No changes. Live state matches the manifests.");
    } else {
        println!("Apply complete: {} changes applied.", report.outcomes.len());
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing our own plain data cannot fail; an empty object is the safe fallback.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string())
}
