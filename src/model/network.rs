//! EC2 and ELBv2 kinds: `SecurityGroup`, `Instance`, `TargetGroup`, `ListenerRule`.

use super::common::Tags;
use serde::{Deserialize, Serialize};

/// `kind: SecurityGroup`: the group and every rule in it (rules not listed are drift).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityGroupSpec {
    /// Group name (`durable-code-dev-observability-sg`).
    pub name: String,
    /// Group description (immutable in AWS: changing it replaces the group).
    pub description: String,
    /// The Lookup of the VPC.
    pub vpc: String,
    /// Inbound rules.
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    /// Outbound rules.
    #[serde(default)]
    pub egress: Vec<EgressRule>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
}

/// An inbound rule; a list of ports means one rule per port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Why the rule exists (stored as the rule's description).
    #[serde(default)]
    pub description: String,
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: Protocol,
    /// Ports; empty only with protocol `all`.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The source.
    pub from: Peer,
}

/// An outbound rule; a list of ports means one rule per port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Why the rule exists.
    #[serde(default)]
    pub description: String,
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: Protocol,
    /// Ports; empty only with protocol `all`.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The destination.
    pub to: Peer,
}

/// The other side of a rule: exactly one of a security group or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    /// A SecurityGroup or Lookup (type securityGroup) by manifest name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group: Option<String>,
    /// An IPv4 or IPv6 CIDR block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// IP protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
    /// Every protocol (`-1`).
    All,
}

impl Protocol {
    /// The EC2 API's spelling.
    pub fn as_ec2(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::All => "-1",
        }
    }
}

/// `kind: Instance`: the EC2 host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSpec {
    /// The `Name` tag (`durable-code-dev-observability`).
    pub name: String,
    /// EC2 instance type.
    pub instance_type: String,
    /// Which AMI to run.
    #[serde(default)]
    pub ami: AmiSource,
    /// The Lookup of the subnet(s); the first by id is used.
    pub subnet: String,
    /// SecurityGroups or Lookups (type securityGroup) by manifest name.
    pub security_groups: Vec<String>,
    /// The Lookup of the IAM instance profile.
    pub instance_profile: String,
    /// IMDS settings.
    #[serde(default)]
    pub metadata_options: MetadataOptions,
    /// The root EBS volume.
    #[serde(default)]
    pub root_volume: RootVolume,
    /// User data script (cloud-init); changing it replaces the instance.
    #[serde(default)]
    pub user_data: Option<String>,
    /// User data rendered by stackwarden instead (docs/bootstrap.md): installs Docker,
    /// fetches the digest-pinned artifact from the bucket and converges the host from the
    /// published source. Exclusive with `userData`; changing it replaces the instance too.
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
}

/// What a new instance starts from at first boot (the Instance's `bootstrap`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bootstrap {
    /// `none` (Docker only), `image` (a `docker save` tarball, loaded) or `binary` (the
    /// static binary, installed on the host).
    pub artifact: ArtifactKind,
    /// The artifact's SHA-256 (`stackwarden publish --artifact` prints it): the only digest
    /// the host trusts, since the bucket holds just the bytes.
    #[serde(default)]
    pub sha256: String,
    /// The minisign public key revisions are signed with (the text of `stackwarden.pub`).
    #[serde(default)]
    pub trust: String,
    /// The Bucket (by manifest name) holding the artifact and the published revisions.
    pub bucket: String,
    /// The delivery prefix in it.
    #[serde(default = "default_delivery_prefix")]
    pub prefix: String,
    /// The host root (logs, the trusted key and the source's state go under `stackwarden/`).
    pub host_root: String,
    /// The Container (by manifest name) that is stackwarden's daemon.
    #[serde(default = "default_daemon_container")]
    pub container: String,
}

fn default_delivery_prefix() -> String {
    "stackwarden".to_string()
}

fn default_daemon_container() -> String {
    "stackwarden".to_string()
}

/// What kind of artifact a bootstrap fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// Nothing: the user data installs Docker only.
    None,
    /// A `docker save` tarball of the image Container/stackwarden declares.
    Image,
    /// The static binary.
    Binary,
}

impl ArtifactKind {
    /// As the user data names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::None => "none",
            ArtifactKind::Image => "image",
            ArtifactKind::Binary => "binary",
        }
    }
}

/// The AMI: a pinned id, or the newest one an SSM public parameter names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmiSource {
    /// A pinned AMI id.
    #[serde(default)]
    pub id: Option<String>,
    /// An SSM parameter holding the AMI id.
    #[serde(default)]
    pub ssm_parameter: Option<String>,
}

/// The SSM public parameter of the newest Amazon Linux 2023 x86_64 AMI.
pub const AL2023_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

impl Default for AmiSource {
    fn default() -> Self {
        AmiSource {
            id: None,
            ssm_parameter: Some(AL2023_PARAMETER.to_string()),
        }
    }
}

/// Instance metadata service options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataOptions {
    /// `required` is IMDSv2.
    #[serde(default)]
    pub http_tokens: HttpTokens,
    /// Hop limit; 2 lets containers reach IMDS.
    #[serde(default = "two")]
    pub http_put_response_hop_limit: u8,
    /// Instance tags visible in metadata.
    #[serde(default = "yes")]
    pub instance_metadata_tags: bool,
    /// The metadata endpoint itself.
    #[serde(default = "yes")]
    pub http_endpoint: bool,
}

fn two() -> u8 {
    2
}
fn yes() -> bool {
    true
}

impl Default for MetadataOptions {
    fn default() -> Self {
        MetadataOptions {
            http_tokens: HttpTokens::Required,
            http_put_response_hop_limit: 2,
            instance_metadata_tags: true,
            http_endpoint: true,
        }
    }
}

/// IMDS token mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv2 only.
    #[default]
    Required,
    /// IMDSv1 allowed (a policy violation).
    Optional,
}

/// The root EBS volume.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootVolume {
    /// Size in GiB.
    #[serde(default = "thirty")]
    pub size_gib: u32,
    /// EBS volume type.
    #[serde(default = "gp3", rename = "type")]
    pub volume_type: String,
    /// Encryption at rest.
    #[serde(default = "yes")]
    pub encrypted: bool,
}

fn thirty() -> u32 {
    30
}
fn gp3() -> String {
    "gp3".to_string()
}

impl Default for RootVolume {
    fn default() -> Self {
        RootVolume {
            size_gib: 30,
            volume_type: gp3(),
            encrypted: true,
        }
    }
}

/// `kind: TargetGroup`: an ALB target group and its registered targets.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupSpec {
    /// Target group name (`durable-code-dev-faro-tg`).
    pub name: String,
    /// `HTTP` or `HTTPS`.
    #[serde(default = "http")]
    pub protocol: String,
    /// Traffic port.
    pub port: u16,
    /// The Lookup of the VPC.
    pub vpc: String,
    /// Health check settings.
    pub health_check: HealthCheckSpec,
    /// Seconds to drain a deregistered target.
    #[serde(default = "thirty")]
    pub deregistration_delay: u32,
    /// Targets: Instances by manifest name and port.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
}

fn http() -> String {
    "HTTP".to_string()
}

/// A target group health check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Request path (`/-/ready`).
    pub path: String,
    /// Expected HTTP codes (`200`).
    #[serde(default = "ok")]
    pub matcher: String,
    /// Seconds between checks.
    #[serde(default = "thirty")]
    pub interval: u32,
    /// Successes before healthy.
    #[serde(default = "two_u32")]
    pub healthy_threshold: u32,
    /// Failures before unhealthy.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
    /// Seconds before a check counts as failed.
    #[serde(default = "five")]
    pub timeout: u32,
    /// The port checked: `traffic-port` (the target's) or a number.
    #[serde(default = "traffic_port")]
    pub port: String,
    /// `HTTP` or `HTTPS`.
    #[serde(default = "http")]
    pub protocol: String,
    /// Whether checks run at all.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn five() -> u32 {
    5
}
fn traffic_port() -> String {
    "traffic-port".to_string()
}
fn enabled() -> bool {
    true
}

fn ok() -> String {
    "200".to_string()
}
fn two_u32() -> u32 {
    2
}
fn three() -> u32 {
    3
}

/// One registered target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// An Instance by manifest name.
    pub instance: String,
    /// The port traffic goes to.
    pub port: u16,
}

/// `kind: ListenerRule`: a path rule on the looked-up ALB's listeners.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerRuleSpec {
    /// The Lookup of the load balancer.
    pub load_balancer: String,
    /// Listeners by port; an optional one is skipped when the ALB has no such listener.
    pub listeners: Vec<ListenerRef>,
    /// Rule priority (unique per listener).
    pub priority: u32,
    /// Path patterns (`/collect`, `/collect/*`).
    pub path_patterns: Vec<String>,
    /// The TargetGroup to forward to, by manifest name.
    pub forward_to: String,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A listener of the ALB, by port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerRef {
    /// Listener port (80, 443).
    pub port: u16,
    /// When true, a missing listener is not an error (the HTTPS one).
    #[serde(default)]
    pub optional: bool,
}
