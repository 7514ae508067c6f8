//! Reports of a plan for readers other than a terminal: Markdown for a CI job summary
//! (`--output markdown`) and SARIF 2.1.0 for code scanning (`--output sarif`). Pure: a plan and
//! the desired state in, text out; no I/O, no clock. A report never shows a secret value: the
//! plan never carries one (a sensitive field is only "differs"), and nothing else is read.

pub mod markdown;
pub mod sarif;

use crate::model::{Desired, Resource};
use crate::plan::Change;

/// What apply did with one planned change, as the reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// The change that was attempted.
    pub change: &'a Change,
    /// `None` when it succeeded; otherwise what failed, for people.
    pub error: Option<&'a str>,
}

/// The declared resource a plan names as `Kind/name`, if the manifests declare it (an
/// unmanaged `docker container X` or the Stack itself has no entry).
fn declared<'a>(desired: &'a Desired, resource: &str) -> Option<&'a Resource> {
    desired
        .resources
        .iter()
        .find(|r| r.id.to_string() == resource)
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("{n} {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::model::{
        Desired, Ensure, HostSpec, Kind, MemSize, Mode, ParameterSpec, Resource, ResourceId,
        SourceLocation, Spec, StackSpec,
    };
    use std::time::Duration;

    /// A desired state that declares `SecurityGroup/observability` at
    /// `manifests/network.yaml:6:3` and `Bucket/data`. The reports read only ids and locations,
    /// so every resource carries the same placeholder spec.
    pub(crate) fn desired() -> Desired {
        let stack = StackSpec {
            project: "durable-code".into(),
            environment: "ci".into(),
            region: "us-east-1".into(),
            enabled: true,
            mode: Mode::Enforce,
            reconcile_interval: Duration::from_secs(30),
            domain: "example.com".into(),
            host: HostSpec {
                instance_type: "t3.medium".into(),
                memory_budget: MemSize(3 << 30),
                root: "/tmp".into(),
            },
            alerts: Default::default(),
            acknowledgements: Vec::new(),
        };
        let spec: ParameterSpec = serde_json::from_value(serde_json::json!({
            "name": "/p/e/pw", "type": "SecureString", "valueFrom": {"env": "PW"}
        }))
        .expect("a parameter spec");
        let resource = |kind, name: &str, file: &str, line, column| Resource {
            id: ResourceId::new(kind, name),
            spec: Spec::Parameter(spec.clone()),
            ensure: Ensure::Present,
            mode: Mode::Enforce,
            source: SourceLocation {
                file: file.into(),
                line,
                column,
            },
        };
        Desired {
            stack_name: "observability".into(),
            stack,
            environment: "ci".into(),
            resources: vec![
                resource(
                    Kind::SecurityGroup,
                    "observability",
                    "manifests/network.yaml",
                    6,
                    3,
                ),
                resource(Kind::Bucket, "data", "manifests/storage.yaml", 4, 3),
            ],
        }
    }
}
