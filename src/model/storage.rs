//! `Bucket` (S3) and `Parameter` (SSM): the persistent base of the stack.

use super::common::Tags;
use serde::{Deserialize, Serialize};

/// The keys of the stack's bucket that stackwarden keeps for itself: the lease, signed
/// delivery's bundles, pointers and artifacts, the status snapshots. Only stackwarden writes
/// there (CI publishes, the host's daemon reports), so no backend's data may land under it.
pub const STACKWARDEN_KEYS: &str = "stackwarden/";

/// `kind: Bucket`: the S3 bucket the backends store their data in.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketSpec {
    /// Bucket name; `${account}` is filled in with the caller's account at run time.
    pub name: String,
    /// The four public-access-block flags; all default to on.
    #[serde(default)]
    pub public_access_block: PublicAccessBlock,
    /// Default server-side encryption.
    #[serde(default)]
    pub encryption: Encryption,
    /// Object versioning.
    #[serde(default)]
    pub versioning: bool,
    /// Expiry rules, one per prefix.
    #[serde(default)]
    pub lifecycle: Vec<LifecycleRule>,
    /// Only `Retain`: stackwarden never deletes a bucket or its objects.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Extra tags (ownership tags are added by stackwarden).
    #[serde(default)]
    pub tags: Tags,
    /// The bucket policy, as a JSON document; absent unless declared: any statement live
    /// that is not declared here is drift and goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Who owns the objects; `BucketOwnerEnforced` (the default, as AWS now sets it for new
    /// buckets) switches ACLs off.
    #[serde(default)]
    pub object_ownership: ObjectOwnership,
}

/// S3 Object Ownership.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ObjectOwnership {
    /// ACLs are off; the bucket owner owns every object.
    #[default]
    BucketOwnerEnforced,
    /// ACLs apply; objects written with bucket-owner-full-control are the owner's.
    BucketOwnerPreferred,
    /// ACLs apply; the writer owns what it writes.
    ObjectWriter,
}

impl ObjectOwnership {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectOwnership::BucketOwnerEnforced => "BucketOwnerEnforced",
            ObjectOwnership::BucketOwnerPreferred => "BucketOwnerPreferred",
            ObjectOwnership::ObjectWriter => "ObjectWriter",
        }
    }
}

/// S3 public-access-block settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicAccessBlock {
    /// BlockPublicAcls.
    #[serde(default = "yes")]
    pub block_public_acls: bool,
    /// IgnorePublicAcls.
    #[serde(default = "yes")]
    pub ignore_public_acls: bool,
    /// BlockPublicPolicy.
    #[serde(default = "yes")]
    pub block_public_policy: bool,
    /// RestrictPublicBuckets.
    #[serde(default = "yes")]
    pub restrict_public_buckets: bool,
}

fn yes() -> bool {
    true
}

impl Default for PublicAccessBlock {
    fn default() -> Self {
        PublicAccessBlock {
            block_public_acls: true,
            ignore_public_acls: true,
            block_public_policy: true,
            restrict_public_buckets: true,
        }
    }
}

impl PublicAccessBlock {
    /// True when all four flags are on.
    pub fn all_on(&self) -> bool {
        self.block_public_acls
            && self.ignore_public_acls
            && self.block_public_policy
            && self.restrict_public_buckets
    }
}

/// Default bucket encryption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Encryption {
    /// SSE-S3.
    #[default]
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS with the AWS-managed key.
    #[serde(rename = "aws:kms")]
    Kms,
    /// No default encryption (a policy violation).
    #[serde(rename = "none")]
    None,
}

/// One lifecycle rule: objects under `prefix` expire after `expirationDays`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleRule {
    /// Rule id.
    pub id: String,
    /// Key prefix (`mimir/`).
    pub prefix: String,
    /// Days until expiry.
    pub expiration_days: u32,
}

/// What happens to the bucket when it leaves the manifests or the stack is disabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum DeletionPolicy {
    /// Never delete.
    #[default]
    Retain,
}

/// `kind: Parameter`: an SSM parameter whose value comes from outside the manifests.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParameterSpec {
    /// Parameter name (`/durable-code/dev/grafana/admin-password`).
    pub name: String,
    /// Only `SecureString` is supported: every parameter stackwarden manages is a secret.
    #[serde(rename = "type", default)]
    pub kind: ParameterType,
    /// Description stored with the parameter.
    #[serde(default)]
    pub description: String,
    /// Where the value comes from; it is never printed.
    pub value_from: SecretSource,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
}

/// The SSM parameter type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ParameterType {
    /// KMS-encrypted string.
    #[default]
    SecureString,
}

/// Where a secret value is read from at run time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable name.
    #[serde(default)]
    pub env: Option<String>,
    /// A file path (trailing newline trimmed).
    #[serde(default)]
    pub file: Option<String>,
}
