//! The one way the tests run the stackwarden binary: a small builder over `std::process::Command`
//! that starts from the repository root and adds only what a caller asks for (AWS pointed at a
//! server with test credentials, a directory, variables), so each test states the environment
//! its run depends on and nothing leaks in from another test's copy.

use crate::support::moto::Moto;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// The static access key moto accepts before it enforces IAM.
const TEST_KEY: &str = "testing";

/// One run of the stackwarden binary, being described.
pub struct Cli {
    cmd: Command,
}

impl Cli {
    /// `stackwarden ARGS`, from the repository root (where the shipped manifests are).
    pub fn new(args: &[&str]) -> Cli {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackwarden"));
        cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
        Cli { cmd }
    }

    /// More arguments, after those given so far.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Cli {
        self.cmd.args(args);
        self
    }

    /// One more argument (a path, say), after those given so far.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cli {
        self.cmd.arg(arg);
        self
    }

    /// Runs from `dir` instead of the repository root.
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Cli {
        self.cmd.current_dir(dir);
        self
    }

    /// AWS at `endpoint` in us-east-1 with the test key; a profile from the caller's
    /// environment would take precedence over the key, so it is removed.
    pub fn aws(mut self, endpoint: &str) -> Cli {
        self.cmd
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", TEST_KEY)
            .env("AWS_SECRET_ACCESS_KEY", TEST_KEY)
            .env_remove("AWS_PROFILE");
        self
    }

    /// AWS at this moto server, as [`Cli::aws`] sets it up.
    pub fn moto(self, moto: &Moto) -> Cli {
        self.aws(&moto.endpoint)
    }

    /// Another access key (id, secret) in place of the test key.
    pub fn credentials(self, key: &(String, String)) -> Cli {
        self.env("AWS_ACCESS_KEY_ID", &key.0)
            .env("AWS_SECRET_ACCESS_KEY", &key.1)
    }

    /// Sets a variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cli {
        self.cmd.env(key, value);
        self
    }

    /// Sets each variable.
    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Cli {
        self.cmd.envs(vars.into_iter().copied());
        self
    }

    /// Removes a variable the caller's environment may hold.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cli {
        self.cmd.env_remove(key);
        self
    }

    /// Runs it to the end and collects what it printed.
    pub fn output(mut self) -> Output {
        self.cmd.output().expect("the stackwarden binary runs")
    }

    /// The command itself, for a caller that spawns a child process or redirects its output.
    pub fn command(self) -> Command {
        self.cmd
    }
}

/// Everything a run printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
