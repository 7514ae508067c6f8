//! The `stackwarden` binary: logging set-up, argument parsing, and the exit code.
#![deny(unsafe_code)]

use clap::Parser;
use stackwarden::cli::{Cli, LogFormat};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::prelude::*;

/// The log filter variables, the first set one wins: ours, then the ecosystem's.
const LOG_VARIABLES: [&str; 2] = ["STACKWARDEN_LOG", "RUST_LOG"];

/// The filter when neither is set: what a person must act on, plus the apply record (each
/// step as it happens, so an interrupted apply leaves a trace) and the daemon's audit trail.
fn default_filter() -> String {
    format!(
        "warn,{}=info,stackwarden::audit=info,stackwarden::reconcile=info",
        stackwarden::provider::host::APPLY_LOG_TARGET
    )
}

// One thread: every command waits on the network (AWS, Docker, HTTP), never on the CPU, and
// each extra runtime thread costs the daemon memory (its stack and its malloc arena) that
// its 25 MB budget does not have.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only stackwarden's own events may be more detailed than INFO. The HTTP, AWS and Docker
    // client crates log requests and responses at DEBUG and TRACE: the SDK prints a request
    // body when LOG_SIGNABLE_BODY is set (PutParameter carries the admin password), and the
    // Docker client a container's create and inspect bodies. No filter a user writes can lift
    // this cap.
    let own_detail_only = filter_fn(|meta| {
        *meta.level() <= tracing::Level::INFO || meta.target().starts_with("stackwarden")
    });
    let filter = log_filter().and(own_detail_only);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter))
            .init(),
        // Colour for a person at a terminal; plain text for files and CI logs.
        LogFormat::Text => tracing_subscriber::registry()
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .init(),
    }
    stackwarden::cli::run(cli).await
}

/// The filter of the first log variable set, or the default; a filter that does not parse is
/// said once and replaced by the default, never silently.
fn log_filter() -> EnvFilter {
    for var in LOG_VARIABLES {
        match std::env::var(var) {
            Ok(spec) if !spec.trim().is_empty() => {
                return EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                    eprintln!("stackwarden: ignoring {var} ({e}); logging at the default filter");
                    EnvFilter::new(default_filter())
                });
            }
            _ => continue,
        }
    }
    EnvFilter::new(default_filter())
}
