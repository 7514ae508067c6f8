//! The desired-state model: one type per resource kind, shared by the manifest loader, the
//! policy rules, the planner and the providers. Plain data (std + serde only): nothing here
//! talks to AWS, Docker or the file system, so observed state can reuse the same types.

mod common;
mod config_file;
mod container;
mod lookup;
mod network;
pub mod stack;
mod storage;

pub use common::{Ensure, MemSize, Metadata, Mode, ResourceId, SourceLocation, Tags};
pub use config_file::{
    ConfigFileSpec, DEFAULT_DIRECTORY_MODE, DEFAULT_FILE_MODE, FileType, RESERVED_DIR,
};
pub use container::{
    ContainerSpec, DependsOn, DependsOnCondition, Device, EnvValue, HealthCheck, Mount, Port,
    RestartPolicy, RootAllowance,
};
pub use lookup::{LookupSpec, LookupType};
pub use network::{
    AmiSource, ArtifactKind, Bootstrap, EgressRule, HealthCheckSpec, HttpTokens, IngressRule,
    InstanceSpec, ListenerRef, ListenerRuleSpec, MetadataOptions, Peer, Protocol, RootVolume,
    SecurityGroupSpec, Target, TargetGroupSpec,
};
pub use stack::{
    Acknowledgement, BasicAuth, HostSpec, Receiver, ReceiverAuth, ReceiverTls, ReceiverType,
    StackSpec,
};
pub use storage::{
    BucketSpec, DeletionPolicy, Encryption, LifecycleRule, ObjectOwnership, ParameterSpec,
    ParameterType, PublicAccessBlock, STACKWARDEN_KEYS, SecretSource,
};

use serde::Serialize;

/// The kinds of resource a manifest can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// The stack itself: project, environment, flags, receivers, host budget.
    Stack,
    /// A read-only reference to pre-existing infrastructure.
    Lookup,
    /// An EC2 security group and its rules.
    SecurityGroup,
    /// An S3 bucket.
    Bucket,
    /// An SSM parameter.
    Parameter,
    /// The EC2 host.
    Instance,
    /// An ALB target group.
    TargetGroup,
    /// Listener rules on the looked-up ALB.
    ListenerRule,
    /// A file or directory under the host root.
    ConfigFile,
    /// A Docker container on the host.
    Container,
}

impl Kind {
    /// Every kind, in dependency order (what a kind references comes before it).
    pub const ALL: [Kind; 10] = [
        Kind::Stack,
        Kind::Lookup,
        Kind::SecurityGroup,
        Kind::Bucket,
        Kind::Parameter,
        Kind::Instance,
        Kind::TargetGroup,
        Kind::ListenerRule,
        Kind::ConfigFile,
        Kind::Container,
    ];

    /// The name as written in a manifest's `kind:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stack => "Stack",
            Kind::Lookup => "Lookup",
            Kind::SecurityGroup => "SecurityGroup",
            Kind::Bucket => "Bucket",
            Kind::Parameter => "Parameter",
            Kind::Instance => "Instance",
            Kind::TargetGroup => "TargetGroup",
            Kind::ListenerRule => "ListenerRule",
            Kind::ConfigFile => "ConfigFile",
            Kind::Container => "Container",
        }
    }

    /// Parses a manifest's `kind:` value.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True for the kinds that live on the host (files and containers), false for AWS and
    /// the Stack itself. Exhaustive, so a new kind must choose its world.
    pub fn on_host(self) -> bool {
        match self {
            Kind::ConfigFile | Kind::Container => true,
            Kind::Stack
            | Kind::Lookup
            | Kind::SecurityGroup
            | Kind::Bucket
            | Kind::Parameter
            | Kind::Instance
            | Kind::TargetGroup
            | Kind::ListenerRule => false,
        }
    }

    /// Runtime kinds are removed when the stack is disabled; base kinds stay (the seed's
    /// base/runtime workspace split: data and identity survive a disable).
    pub fn is_runtime(self) -> bool {
        matches!(
            self,
            Kind::Instance | Kind::TargetGroup | Kind::ListenerRule | Kind::Container
        )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spec of one resource, by kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    /// See [`StackSpec`].
    Stack(StackSpec),
    /// See [`LookupSpec`].
    Lookup(LookupSpec),
    /// See [`SecurityGroupSpec`].
    SecurityGroup(SecurityGroupSpec),
    /// See [`BucketSpec`].
    Bucket(BucketSpec),
    /// See [`ParameterSpec`].
    Parameter(ParameterSpec),
    /// See [`InstanceSpec`].
    Instance(InstanceSpec),
    /// See [`TargetGroupSpec`].
    TargetGroup(TargetGroupSpec),
    /// See [`ListenerRuleSpec`].
    ListenerRule(ListenerRuleSpec),
    /// See [`ConfigFileSpec`].
    ConfigFile(ConfigFileSpec),
    /// See [`ContainerSpec`].
    Container(Box<ContainerSpec>),
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Stack(_) => Kind::Stack,
            Spec::Lookup(_) => Kind::Lookup,
            Spec::SecurityGroup(_) => Kind::SecurityGroup,
            Spec::Bucket(_) => Kind::Bucket,
            Spec::Parameter(_) => Kind::Parameter,
            Spec::Instance(_) => Kind::Instance,
            Spec::TargetGroup(_) => Kind::TargetGroup,
            Spec::ListenerRule(_) => Kind::ListenerRule,
            Spec::ConfigFile(_) => Kind::ConfigFile,
            Spec::Container(_) => Kind::Container,
        }
    }
}

/// One declared resource: identity, spec, and how stackwarden may treat it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    /// Kind and manifest name.
    pub id: ResourceId,
    /// What is declared.
    pub spec: Spec,
    /// Whether the resource should exist (runtime kinds are `Absent` while the stack is disabled).
    pub ensure: Ensure,
    /// `observe` reports drift without writing; the stack-wide mode applies when unset.
    pub mode: Mode,
    /// Where it was declared, for messages.
    #[serde(skip)]
    pub source: SourceLocation,
}

impl Resource {
    /// A short, stable hash of the declared spec (mode and location excluded): what
    /// [`ownership::SPEC_HASH_TAG`] records at apply.
    pub fn spec_hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(&self.spec).unwrap_or_default();
        // 64 bits tell revisions of one resource apart; the tag stays short in consoles.
        hex::encode(&sha2::Sha256::digest(&json)[..8])
    }
}

/// The whole desired state, validated: the Stack plus every other resource, sorted by kind
/// (dependency order) then name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Desired {
    /// The Stack's manifest name (used in ownership tags and labels).
    pub stack_name: String,
    /// The Stack's spec.
    pub stack: StackSpec,
    /// The environment the values came from.
    pub environment: String,
    /// All other resources.
    pub resources: Vec<Resource>,
}

macro_rules! accessors {
    ($($fn_name:ident => $variant:ident : $ty:ty),* $(,)?) => {
        impl Desired {
            $(
                #[doc = concat!("Every declared `", stringify!($variant), "`, with its resource entry.")]
                pub fn $fn_name(&self) -> impl Iterator<Item = (&Resource, &$ty)> {
                    self.resources.iter().filter_map(|r| match &r.spec {
                        Spec::$variant(s) => Some((r, std::borrow::Borrow::<$ty>::borrow(s))),
                        _ => None,
                    })
                }
            )*
        }
    };
}

accessors! {
    lookups => Lookup: LookupSpec,
    security_groups => SecurityGroup: SecurityGroupSpec,
    buckets => Bucket: BucketSpec,
    parameters => Parameter: ParameterSpec,
    instances => Instance: InstanceSpec,
    target_groups => TargetGroup: TargetGroupSpec,
    listener_rules => ListenerRule: ListenerRuleSpec,
    config_files => ConfigFile: ConfigFileSpec,
    containers => Container: ContainerSpec,
}

impl Desired {
    /// The resource with this kind and name, if declared.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.id.kind == kind && r.id.name == name)
    }

    /// The tags every AWS resource stackwarden creates carries (the ownership contract).
    pub fn ownership_tags(&self) -> Tags {
        let mut tags = Tags::new();
        tags.insert(
            common::MANAGED_BY_TAG.to_string(),
            common::MANAGED_BY_VALUE.to_string(),
        );
        tags.insert(common::STACK_TAG.to_string(), self.stack_name.clone());
        tags.insert(common::ENV_TAG.to_string(), self.environment.clone());
        tags
    }

    /// Resources whose spec still holds a run-time value (`${account}`) that was never filled
    /// in: rendering one into a file, a container or a bucket name would write a literal
    /// `${account}`, so callers resolve the account first or refuse.
    pub fn unresolved_runtime(&self) -> Vec<ResourceId> {
        self.resources
            .iter()
            .filter(|r| {
                serde_json::to_string(&r.spec)
                    .map(|json| json.contains("${account}"))
                    .unwrap_or(false)
            })
            .map(|r| r.id.clone())
            .collect()
    }

    /// The acknowledgement in force at `now` that covers a change of `resource` (`Kind/name`)
    /// to all of these field paths, if any.
    pub fn acknowledgement<'a>(
        &self,
        resource: &str,
        paths: impl Iterator<Item = &'a str> + Clone,
        now: std::time::SystemTime,
    ) -> Option<&stack::Acknowledgement> {
        self.stack
            .acknowledgements
            .iter()
            .find(|a| a.active(now) && a.covers_fields(resource, paths.clone()))
    }

    /// The acknowledgement in force at `now` of `rule`'s violation on `resource`, if any.
    pub fn acknowledged_rule(
        &self,
        resource: &str,
        rule: &str,
        now: std::time::SystemTime,
    ) -> Option<&stack::Acknowledgement> {
        self.stack
            .acknowledgements
            .iter()
            .find(|a| a.active(now) && a.covers_rule(resource, rule))
    }

    /// The effective mode of a resource: the stricter of the stack's and its own (a stack in
    /// `observe` is a kill switch no resource can override).
    pub fn effective_mode(&self, resource: &Resource) -> Mode {
        self.stack.mode.min(resource.mode)
    }
}

/// Ownership contract constants (docs/contract.md, "Naming and tagging").
pub mod ownership {
    pub use super::common::{
        ENV_LABEL, ENV_TAG, MANAGED_BY_TAG, MANAGED_BY_VALUE, SPEC_HASH_TAG, STACK_LABEL, STACK_TAG,
    };
}
