//! The `stackwarden` binary: logging set-up, argument parsing, and the exit code.
#![deny(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // STACKWARDEN_LOG, else RUST_LOG (the ecosystem's habit), else warnings plus the apply
    // record: each host step as it happens, so an interrupted apply leaves a trace.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACKWARDEN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "warn,{}=info",
                stackwarden::provider::host::APPLY_LOG_TARGET
            ))
        });
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    stackwarden::cli::run(stackwarden::cli::Cli::parse()).await
}
