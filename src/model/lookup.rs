//! `Lookup`: pre-existing infrastructure that stackwarden reads and never writes.

use super::common::Tags;
use serde::{Deserialize, Serialize};

/// `kind: Lookup`: finds one pre-existing resource by name or tags.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LookupSpec {
    /// What to look up.
    #[serde(rename = "type")]
    pub kind: LookupType,
    /// The resource's name (security groups, load balancers, instance profiles).
    #[serde(default)]
    pub name: Option<String>,
    /// Tags the resource must carry (VPCs, subnets).
    #[serde(default)]
    pub tags: Tags,
    /// For subnets and security groups: the Lookup of the VPC they live in.
    #[serde(default)]
    pub vpc: Option<String>,
    /// For instance profiles: the policies (managed policy names or ARNs, inline policy
    /// names) its role may carry; any other is a policy violation.
    #[serde(default)]
    pub allowed_policies: Vec<String>,
}

/// The kinds of pre-existing resource a Lookup can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LookupType {
    /// A VPC, by tags.
    Vpc,
    /// Subnets, by tags (the first by id is used where one is needed).
    Subnet,
    /// A security group, by name.
    SecurityGroup,
    /// An application load balancer, by name; its listeners are found by port.
    LoadBalancer,
    /// An IAM instance profile, by name.
    InstanceProfile,
}

impl LookupType {
    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupType::Vpc => "vpc",
            LookupType::Subnet => "subnet",
            LookupType::SecurityGroup => "securityGroup",
            LookupType::LoadBalancer => "loadBalancer",
            LookupType::InstanceProfile => "instanceProfile",
        }
    }
}
