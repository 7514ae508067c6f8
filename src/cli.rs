//! The `stackwarden` command line: parses arguments, runs one command, returns the exit code.
//! The only module that turns errors into exit codes and text for people.

use crate::manifest::{self, LoadError};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(common) => validate(&common),
        Command::Plan(_) | Command::Apply(_) | Command::Run(_) => {
            eprintln!("stackwarden: not implemented yet");
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
            report_load_error(&e);
            ExitCode::from(1)
        }
    }
}

fn report_load_error(e: &LoadError) {
    eprintln!("{e}");
}
