//! The `stackwarden` binary: logging set-up, argument parsing, and the exit code.
#![deny(unsafe_code)]

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::prelude::*;

/// The log filter variables, the first set one wins: ours, then the ecosystem's.
const LOG_VARIABLES: [&str; 2] = ["STACKWARDEN_LOG", "RUST_LOG"];
/// The filter when neither is set: what a person must act on.
const DEFAULT_FILTER: &str = "warn";

#[tokio::main]
async fn main() -> ExitCode {
    // Only stackwarden's own events may be more detailed than INFO. The HTTP, AWS and Docker
    // client crates log requests and responses at DEBUG and TRACE: the SDK prints a request
    // body when LOG_SIGNABLE_BODY is set (PutParameter carries the admin password), and the
    // Docker client a container's create and inspect bodies (its environment). No filter a
    // user writes can lift this cap.
    let own_detail_only = filter_fn(|meta| {
        *meta.level() <= tracing::Level::INFO || meta.target().starts_with("stackwarden")
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour for a person at a terminal; plain text for files and CI logs.
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(log_filter().and(own_detail_only)),
        )
        .init();
    stackwarden::cli::run(stackwarden::cli::Cli::parse()).await
}

/// The filter of the first log variable set, or the default; a filter that does not parse is
/// said once and replaced by the default, never silently.
fn log_filter() -> EnvFilter {
    for var in LOG_VARIABLES {
        match std::env::var(var) {
            Ok(spec) if !spec.trim().is_empty() => {
                return EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                    eprintln!("stackwarden: ignoring {var} ({e}); logging at {DEFAULT_FILTER}");
                    EnvFilter::new(DEFAULT_FILTER)
                });
            }
            _ => continue,
        }
    }
    EnvFilter::new(DEFAULT_FILTER)
}
