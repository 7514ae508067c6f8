//! The AWS permissions stackwarden needs: one table of every SDK operation it calls, with the
//! step that makes it (observe, a write of one kind, the lease, signed delivery) and the IAM
//! action and resource AWS authorizes it against; and the policy document each principal
//! needs, derived from that table alone (`stackwarden iam-policy`). A test scans the source
//! for SDK calls, so a call without its entry here, or an entry no code makes, fails.

use crate::model::{Desired, Kind, LookupType};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The tag every resource stackwarden creates carries; EC2 writes are conditioned on it.
pub const STACK_TAG: &str = "stackwarden:stack";
/// The tag naming the stack's environment (the model's `ENV_TAG`, kept here as data too).
pub const ENV_TAG: &str = "stackwarden:env";

/// Where the lease lives in the bucket (see `reconcile::lease`): kept here as data, since the
/// provider sits below the reconcile loop.
pub const LEASE_OBJECTS: &str = "stackwarden/lease/";

/// The default prefix of signed delivery's objects (see `source`): bundles, each
/// environment's pointer and status snapshot. Policies are scoped to it.
pub const DELIVERY_PREFIX: &str = crate::model::STACKWARDEN_KEYS;

/// An AWS service stackwarden calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    /// EC2.
    Ec2,
    /// Elastic Load Balancing v2.
    Elbv2,
    /// S3.
    S3,
    /// SSM.
    Ssm,
    /// IAM (read only).
    Iam,
    /// STS.
    Sts,
}

impl Service {
    /// The name the source uses for the service's client (`self.ec2`, `aws_sdk_ec2`).
    pub fn client_name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Elbv2 => "elbv2",
            Service::S3 => "s3",
            Service::Ssm => "ssm",
            Service::Iam => "iam",
            Service::Sts => "sts",
        }
    }
}

/// What stackwarden is doing when it makes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Reading live state (plan, every pass of the daemon).
    Observe,
    /// Writing a resource of this kind (apply, a repair).
    Write(Kind),
    /// Taking, renewing or releasing the stack's lease in its bucket.
    Lease,
    /// Publishing a signed bundle and advancing the pointer (CI's `publish`).
    Publish,
    /// Following the pointer and downloading bundles (the daemon's source).
    Follow,
    /// Writing the status snapshot to the bucket (the daemon's leader).
    Report,
    /// Reading the status snapshot (`stackwarden status`, from anywhere).
    ReadStatus,
    /// Reading a secret Parameter's value (the host writes it into a ConfigFile).
    ReadSecret,
    /// Not stackwarden's own: the backends (Mimir, Loki, Tempo, Pyroscope) on the host keep
    /// their data in the bucket through the instance role, under the keys their shipped
    /// configs name ([`crate::manifest::backends`]).
    BackendStorage,
}

/// Which resources an action is granted on, worked out from the manifests by [`Scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// No resource-level permission exists for the action (EC2 and ELBv2 describes, SSM's
    /// instance information, IAM's policy list): `*`.
    Any,
    /// Every caller may make it; no policy grants it (STS GetCallerIdentity).
    Nothing,
    /// The stack's buckets.
    Bucket,
    /// The lease objects in the stack's buckets.
    LeaseObjects,
    /// Delivery's bundles (`stackwarden/bundles/*`) in the stack's buckets.
    Bundles,
    /// The environment's pointer (`stackwarden/<env>/current`).
    Pointer,
    /// What a new instance starts from (`stackwarden/artifacts/*`).
    Artifacts,
    /// The environment's status snapshot (`stackwarden/<env>/status.json`).
    StatusSnapshot,
    /// The stack's parameters.
    Parameter,
    /// The public AMI parameters under `/aws/service/`.
    PublicParameter,
    /// The looked-up instance profiles.
    InstanceProfile,
    /// The instance profiles' roles (named like their profile, as the naming contract has it).
    Role,
    /// Managed policies attached to those roles (AWS's and the account's).
    ManagedPolicy,
    /// The stack's target groups, by name.
    TargetGroup,
    /// The stack's target groups and listener rules (tags on either).
    ElbTagged,
    /// Rules (and, to create one, the listeners) of the looked-up load balancers.
    ListenerRule,
    /// EC2 resources of these types carrying the stack's tag (`aws:ResourceTag`).
    Ec2Owned(&'static [&'static str]),
    /// An EC2 create: resources of the first types must be requested with the stack's tag
    /// (`aws:RequestTag`); those of the second are only used (a subnet, an image, a VPC).
    Ec2Create(&'static [&'static str], &'static [&'static str]),
    /// Tags on EC2 resources: on the stack's own, or set by one of its creates
    /// (`ec2:CreateAction`).
    Ec2Tags(&'static [&'static str]),
}

/// One SDK operation stackwarden calls.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// The service.
    pub service: Service,
    /// The SDK's method name (`describe_instances`).
    pub call: &'static str,
    /// The IAM action AWS authorizes it against (`ec2:DescribeInstances`).
    pub action: &'static str,
    /// The steps that make it.
    pub steps: &'static [Step],
    /// The resources it is granted on.
    pub target: Target,
}

const OBSERVE: &[Step] = &[Step::Observe];
const GROUP: &[Step] = &[Step::Write(Kind::SecurityGroup)];
const INSTANCE: &[Step] = &[Step::Write(Kind::Instance)];
const BUCKET: &[Step] = &[Step::Write(Kind::Bucket)];
const PARAMETER: &[Step] = &[Step::Write(Kind::Parameter)];
const TARGET_GROUP: &[Step] = &[Step::Write(Kind::TargetGroup)];
const RULE: &[Step] = &[Step::Write(Kind::ListenerRule)];
const TAGGED: &[Step] = &[
    Step::Write(Kind::SecurityGroup),
    Step::Write(Kind::Instance),
];
const ELB_TAGGED: &[Step] = &[
    Step::Write(Kind::TargetGroup),
    Step::Write(Kind::ListenerRule),
];
const GROUP_AND_INSTANCE: &[Step] = &[
    Step::Write(Kind::SecurityGroup),
    Step::Write(Kind::Instance),
];
const LEASE: &[Step] = &[Step::Lease];
const PUBLISH: &[Step] = &[Step::Publish];
/// Plan looks for the artifact an Instance's bootstrap pins (HeadObject); publish compares one
/// already there.
const OBSERVE_AND_PUBLISH: &[Step] = &[Step::Observe, Step::Publish];
const PUBLISH_AND_FOLLOW: &[Step] = &[Step::Publish, Step::Follow];
const REPORT: &[Step] = &[Step::Report];
const FOLLOW: &[Step] = &[Step::Follow];
const READ_SECRET: &[Step] = &[Step::ReadSecret];
const READ_STATUS: &[Step] = &[Step::ReadStatus];

/// EC2 resource types an instance write touches.
const INSTANCE_TYPES: &[&str] = &["instance"];
/// EC2 resource types a security-group write touches.
const GROUP_TYPES: &[&str] = &["security-group"];
/// EC2 resource types stackwarden tags.
const TAG_TYPES: &[&str] = &["instance", "volume", "security-group"];

const fn op(
    service: Service,
    call: &'static str,
    action: &'static str,
    steps: &'static [Step],
    target: Target,
) -> Operation {
    Operation {
        service,
        call,
        action,
        steps,
        target,
    }
}

use Service::{Ec2, Elbv2, Iam, S3, Ssm, Sts};

/// Every AWS operation stackwarden calls. Nothing else may be called, and each is needed.
pub const OPERATIONS: &[Operation] = &[
    op(
        Sts,
        "get_caller_identity",
        "sts:GetCallerIdentity",
        OBSERVE,
        Target::Nothing,
    ),
    // EC2: lookups and observe.
    op(
        Ec2,
        "describe_vpcs",
        "ec2:DescribeVpcs",
        OBSERVE,
        Target::Any,
    ),
    op(
        Ec2,
        "describe_subnets",
        "ec2:DescribeSubnets",
        OBSERVE,
        Target::Any,
    ),
    op(
        Ec2,
        "describe_security_groups",
        "ec2:DescribeSecurityGroups",
        OBSERVE,
        Target::Any,
    ),
    op(
        Ec2,
        "describe_security_group_rules",
        "ec2:DescribeSecurityGroupRules",
        OBSERVE,
        Target::Any,
    ),
    op(
        Ec2,
        "describe_instances",
        "ec2:DescribeInstances",
        OBSERVE,
        Target::Any,
    ),
    op(
        Ec2,
        "describe_volumes",
        "ec2:DescribeVolumes",
        OBSERVE,
        Target::Any,
    ),
    op(
        Ec2,
        "describe_images",
        "ec2:DescribeImages",
        OBSERVE,
        Target::Any,
    ),
    // EC2: security groups.
    op(
        Ec2,
        "create_security_group",
        "ec2:CreateSecurityGroup",
        GROUP,
        Target::Ec2Create(GROUP_TYPES, &["vpc"]),
    ),
    op(
        Ec2,
        "delete_security_group",
        "ec2:DeleteSecurityGroup",
        GROUP,
        Target::Ec2Owned(GROUP_TYPES),
    ),
    op(
        Ec2,
        "authorize_security_group_ingress",
        "ec2:AuthorizeSecurityGroupIngress",
        GROUP,
        Target::Ec2Owned(GROUP_TYPES),
    ),
    op(
        Ec2,
        "authorize_security_group_egress",
        "ec2:AuthorizeSecurityGroupEgress",
        GROUP,
        Target::Ec2Owned(GROUP_TYPES),
    ),
    op(
        Ec2,
        "revoke_security_group_ingress",
        "ec2:RevokeSecurityGroupIngress",
        GROUP,
        Target::Ec2Owned(GROUP_TYPES),
    ),
    op(
        Ec2,
        "revoke_security_group_egress",
        "ec2:RevokeSecurityGroupEgress",
        GROUP,
        Target::Ec2Owned(GROUP_TYPES),
    ),
    // EC2: tags, on security groups and on the instance and its volume.
    op(
        Ec2,
        "create_tags",
        "ec2:CreateTags",
        TAGGED,
        Target::Ec2Tags(TAG_TYPES),
    ),
    op(
        Ec2,
        "delete_tags",
        "ec2:DeleteTags",
        TAGGED,
        Target::Ec2Owned(TAG_TYPES),
    ),
    // EC2: the instance.
    op(
        Ec2,
        "run_instances",
        "ec2:RunInstances",
        INSTANCE,
        Target::Ec2Create(
            &["instance", "volume"],
            &["subnet", "security-group", "network-interface", "image"],
        ),
    ),
    op(
        Ec2,
        "terminate_instances",
        "ec2:TerminateInstances",
        INSTANCE,
        Target::Ec2Owned(INSTANCE_TYPES),
    ),
    op(
        Ec2,
        "stop_instances",
        "ec2:StopInstances",
        INSTANCE,
        Target::Ec2Owned(INSTANCE_TYPES),
    ),
    op(
        Ec2,
        "start_instances",
        "ec2:StartInstances",
        INSTANCE,
        Target::Ec2Owned(INSTANCE_TYPES),
    ),
    // Instance type and user data; and the groups of an instance, which a security group's
    // deletion moves it off first.
    op(
        Ec2,
        "modify_instance_attribute",
        "ec2:ModifyInstanceAttribute",
        GROUP_AND_INSTANCE,
        Target::Ec2Owned(INSTANCE_TYPES),
    ),
    op(
        Ec2,
        "modify_instance_metadata_options",
        "ec2:ModifyInstanceMetadataOptions",
        INSTANCE,
        Target::Ec2Owned(INSTANCE_TYPES),
    ),
    op(
        Ec2,
        "modify_volume",
        "ec2:ModifyVolume",
        INSTANCE,
        Target::Ec2Owned(&["volume"]),
    ),
    op(
        Ec2,
        "associate_iam_instance_profile",
        "ec2:AssociateIamInstanceProfile",
        INSTANCE,
        Target::Ec2Owned(INSTANCE_TYPES),
    ),
    op(
        Ec2,
        "replace_iam_instance_profile_association",
        "ec2:ReplaceIamInstanceProfileAssociation",
        INSTANCE,
        Target::Ec2Owned(INSTANCE_TYPES),
    ),
    // ELBv2: observe.
    op(
        Elbv2,
        "describe_load_balancers",
        "elasticloadbalancing:DescribeLoadBalancers",
        OBSERVE,
        Target::Any,
    ),
    op(
        Elbv2,
        "describe_listeners",
        "elasticloadbalancing:DescribeListeners",
        OBSERVE,
        Target::Any,
    ),
    op(
        Elbv2,
        "describe_rules",
        "elasticloadbalancing:DescribeRules",
        OBSERVE,
        Target::Any,
    ),
    op(
        Elbv2,
        "describe_target_groups",
        "elasticloadbalancing:DescribeTargetGroups",
        OBSERVE,
        Target::Any,
    ),
    op(
        Elbv2,
        "describe_target_group_attributes",
        "elasticloadbalancing:DescribeTargetGroupAttributes",
        OBSERVE,
        Target::Any,
    ),
    op(
        Elbv2,
        "describe_target_health",
        "elasticloadbalancing:DescribeTargetHealth",
        OBSERVE,
        Target::Any,
    ),
    op(
        Elbv2,
        "describe_tags",
        "elasticloadbalancing:DescribeTags",
        OBSERVE,
        Target::Any,
    ),
    // ELBv2: the target group.
    op(
        Elbv2,
        "create_target_group",
        "elasticloadbalancing:CreateTargetGroup",
        TARGET_GROUP,
        Target::TargetGroup,
    ),
    op(
        Elbv2,
        "modify_target_group",
        "elasticloadbalancing:ModifyTargetGroup",
        TARGET_GROUP,
        Target::TargetGroup,
    ),
    op(
        Elbv2,
        "modify_target_group_attributes",
        "elasticloadbalancing:ModifyTargetGroupAttributes",
        TARGET_GROUP,
        Target::TargetGroup,
    ),
    op(
        Elbv2,
        "delete_target_group",
        "elasticloadbalancing:DeleteTargetGroup",
        TARGET_GROUP,
        Target::TargetGroup,
    ),
    op(
        Elbv2,
        "register_targets",
        "elasticloadbalancing:RegisterTargets",
        TARGET_GROUP,
        Target::TargetGroup,
    ),
    op(
        Elbv2,
        "deregister_targets",
        "elasticloadbalancing:DeregisterTargets",
        TARGET_GROUP,
        Target::TargetGroup,
    ),
    // ELBv2: tags on the target group and the rules.
    op(
        Elbv2,
        "add_tags",
        "elasticloadbalancing:AddTags",
        ELB_TAGGED,
        Target::ElbTagged,
    ),
    op(
        Elbv2,
        "remove_tags",
        "elasticloadbalancing:RemoveTags",
        ELB_TAGGED,
        Target::ElbTagged,
    ),
    // ELBv2: listener rules.
    op(
        Elbv2,
        "create_rule",
        "elasticloadbalancing:CreateRule",
        RULE,
        Target::ListenerRule,
    ),
    op(
        Elbv2,
        "modify_rule",
        "elasticloadbalancing:ModifyRule",
        RULE,
        Target::ListenerRule,
    ),
    op(
        Elbv2,
        "delete_rule",
        "elasticloadbalancing:DeleteRule",
        RULE,
        Target::ListenerRule,
    ),
    // S3: observe the bucket.
    op(
        S3,
        "get_bucket_tagging",
        "s3:GetBucketTagging",
        OBSERVE,
        Target::Bucket,
    ),
    op(
        S3,
        "get_public_access_block",
        "s3:GetBucketPublicAccessBlock",
        OBSERVE,
        Target::Bucket,
    ),
    op(
        S3,
        "get_bucket_encryption",
        "s3:GetEncryptionConfiguration",
        OBSERVE,
        Target::Bucket,
    ),
    op(
        S3,
        "get_bucket_versioning",
        "s3:GetBucketVersioning",
        OBSERVE,
        Target::Bucket,
    ),
    op(
        S3,
        "get_bucket_lifecycle_configuration",
        "s3:GetLifecycleConfiguration",
        OBSERVE,
        Target::Bucket,
    ),
    op(
        S3,
        "get_bucket_policy",
        "s3:GetBucketPolicy",
        OBSERVE,
        Target::Bucket,
    ),
    op(
        S3,
        "get_bucket_acl",
        "s3:GetBucketAcl",
        OBSERVE,
        Target::Bucket,
    ),
    op(
        S3,
        "get_bucket_ownership_controls",
        "s3:GetBucketOwnershipControls",
        OBSERVE,
        Target::Bucket,
    ),
    // S3: write the bucket. Deleting encryption or lifecycle is authorized as a put.
    op(
        S3,
        "create_bucket",
        "s3:CreateBucket",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_bucket_tagging",
        "s3:PutBucketTagging",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_public_access_block",
        "s3:PutBucketPublicAccessBlock",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_bucket_encryption",
        "s3:PutEncryptionConfiguration",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "delete_bucket_encryption",
        "s3:PutEncryptionConfiguration",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_bucket_versioning",
        "s3:PutBucketVersioning",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_bucket_lifecycle_configuration",
        "s3:PutLifecycleConfiguration",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "delete_bucket_lifecycle",
        "s3:PutLifecycleConfiguration",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_bucket_policy",
        "s3:PutBucketPolicy",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "delete_bucket_policy",
        "s3:DeleteBucketPolicy",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_bucket_acl",
        "s3:PutBucketAcl",
        BUCKET,
        Target::Bucket,
    ),
    op(
        S3,
        "put_bucket_ownership_controls",
        "s3:PutBucketOwnershipControls",
        BUCKET,
        Target::Bucket,
    ),
    // S3: the lease.
    op(
        S3,
        "get_object",
        "s3:GetObject",
        LEASE,
        Target::LeaseObjects,
    ),
    // The leader's check before each write (HeadObject is authorised as GetObject).
    op(
        S3,
        "head_object",
        "s3:GetObject",
        LEASE,
        Target::LeaseObjects,
    ),
    op(
        S3,
        "put_object",
        "s3:PutObject",
        LEASE,
        Target::LeaseObjects,
    ),
    // S3: signed delivery. CI uploads bundles and advances the pointer; the host only reads
    // them (an instance role able to write them would let any container reaching IMDS hand
    // the daemon its desired state), and writes its status snapshot, which anyone reads.
    op(S3, "put_object", "s3:PutObject", PUBLISH, Target::Bundles),
    op(S3, "put_object", "s3:PutObject", PUBLISH, Target::Pointer),
    op(
        S3,
        "get_object",
        "s3:GetObject",
        PUBLISH_AND_FOLLOW,
        Target::Pointer,
    ),
    // Publish reads a bundle already there back, to put it right if it was replaced.
    op(
        S3,
        "get_object",
        "s3:GetObject",
        PUBLISH_AND_FOLLOW,
        Target::Bundles,
    ),
    // Artifacts: CI uploads them (publish --artifact; one already there is compared by its
    // size); a new instance's user data downloads one with the AWS CLI through the instance
    // role and checks its digest before running it.
    op(S3, "put_object", "s3:PutObject", PUBLISH, Target::Artifacts),
    op(
        S3,
        "head_object",
        "s3:GetObject",
        OBSERVE_AND_PUBLISH,
        Target::Artifacts,
    ),
    op(S3, "get_object", "s3:GetObject", FOLLOW, Target::Artifacts),
    op(
        S3,
        "put_object",
        "s3:PutObject",
        REPORT,
        Target::StatusSnapshot,
    ),
    op(
        S3,
        "get_object",
        "s3:GetObject",
        READ_STATUS,
        Target::StatusSnapshot,
    ),
    // SSM. The host reads the Parameter's value (decrypted with the account's aws/ssm key,
    // which needs no IAM grant of its own) for the ConfigFile built from it.
    op(
        Ssm,
        "get_parameter",
        "ssm:GetParameter",
        READ_SECRET,
        Target::Parameter,
    ),
    op(
        Ssm,
        "get_parameter_history",
        "ssm:GetParameterHistory",
        OBSERVE,
        Target::Parameter,
    ),
    op(
        Ssm,
        "list_tags_for_resource",
        "ssm:ListTagsForResource",
        OBSERVE,
        Target::Parameter,
    ),
    op(
        Ssm,
        "get_parameter",
        "ssm:GetParameter",
        OBSERVE,
        Target::PublicParameter,
    ),
    op(
        Ssm,
        "describe_instance_information",
        "ssm:DescribeInstanceInformation",
        OBSERVE,
        Target::Any,
    ),
    op(
        Ssm,
        "put_parameter",
        "ssm:PutParameter",
        PARAMETER,
        Target::Parameter,
    ),
    op(
        Ssm,
        "add_tags_to_resource",
        "ssm:AddTagsToResource",
        PARAMETER,
        Target::Parameter,
    ),
    // IAM, read only: the instance profile's role and its policies.
    op(
        Iam,
        "get_instance_profile",
        "iam:GetInstanceProfile",
        OBSERVE,
        Target::InstanceProfile,
    ),
    op(
        Iam,
        "list_role_policies",
        "iam:ListRolePolicies",
        OBSERVE,
        Target::Role,
    ),
    op(
        Iam,
        "get_role_policy",
        "iam:GetRolePolicy",
        OBSERVE,
        Target::Role,
    ),
    op(
        Iam,
        "list_attached_role_policies",
        "iam:ListAttachedRolePolicies",
        OBSERVE,
        Target::Role,
    ),
    op(
        Iam,
        "list_policies",
        "iam:ListPolicies",
        OBSERVE,
        Target::Any,
    ),
    op(
        Iam,
        "get_policy",
        "iam:GetPolicy",
        OBSERVE,
        Target::ManagedPolicy,
    ),
    op(
        Iam,
        "get_policy_version",
        "iam:GetPolicyVersion",
        OBSERVE,
        Target::ManagedPolicy,
    ),
];

/// The IAM action of an API operation as errors name it (`CreateSecurityGroup`,
/// `GetBucketEncryption`), found through the SDK method it is called by.
pub fn action_of_operation(operation: &str) -> Option<&'static str> {
    let mut call = String::with_capacity(operation.len() + 8);
    for (i, c) in operation.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                call.push('_');
            }
            call.push(c.to_ascii_lowercase());
        } else {
            call.push(c);
        }
    }
    OPERATIONS.iter().find(|o| o.call == call).map(|o| o.action)
}

/// An action no SDK call names but AWS checks alongside one: granted with the call's steps.
#[derive(Debug, Clone, Copy)]
pub struct Implied {
    /// The call that needs it.
    pub call: &'static str,
    /// The action.
    pub action: &'static str,
    /// Why AWS asks for it.
    pub why: &'static str,
}

/// Actions AWS checks beside the call's own.
pub const IMPLIED: &[Implied] = &[
    Implied {
        call: "run_instances",
        action: "iam:PassRole",
        why: "launching with an instance profile passes its role to EC2",
    },
    Implied {
        call: "get_object",
        action: "s3:ListBucket",
        why: "without it S3 answers AccessDenied, not NoSuchKey, for a lease not yet written",
    },
];

/// What the backends do with their keys, on the instance role: no SDK call of stackwarden's
/// makes these, so they are not in [`OPERATIONS`]; [`policy`] grants them on the keys each
/// backend's shipped config names, and nowhere else.
pub const BACKEND_ACTIONS: &[Implied] = &[
    Implied {
        call: "(backends)",
        action: "s3:GetObject",
        why: "blocks, chunks, indexes and bucket indexes are read back by queriers and compactors",
    },
    Implied {
        call: "(backends)",
        action: "s3:PutObject",
        why: "ingesters and compactors upload (multipart uploads are authorized as PutObject too)",
    },
    Implied {
        call: "(backends)",
        action: "s3:DeleteObject",
        why: "compactors replace what they merged, and retention deletes what expired",
    },
    Implied {
        call: "(backends)",
        action: "s3:ListBucket",
        why: "they list their prefixes; and, as for the lease, only a caller that may list \
              the bucket is told NoSuchKey rather than AccessDenied for a key not written yet \
              (Mimir's bucket index, Loki's cluster seed), so it is granted on the bucket, \
              without an s3:prefix condition that a GetObject would never meet",
    },
];

/// Who a policy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The CI role: plan and apply the AWS side (observe, every write, the lease).
    Ci,
    /// The pull-request role: plan only (observe).
    Readonly,
    /// The host's instance role: the daemon observes and holds the lease. A daemon that also
    /// repairs AWS (`run --scope all|aws` in `enforce` mode) needs the CI policy besides.
    Host,
    /// The host's instance role of a team that accepts the risk of a host writing AWS
    /// (`iam-policy --for host --allow-aws-writes`, with `run --aws-mode enforce`): the
    /// host's steps and every AWS write CI has, but never publishing a revision. Any container
    /// reaching IMDS can then make those writes (docs/iam.md).
    HostWritingAws,
}

impl Principal {
    /// Whether this principal's policy covers `step`.
    pub fn covers(self, step: Step) -> bool {
        match (self, step) {
            // The host's steps, and CI's AWS writes besides.
            (Principal::HostWritingAws, Step::Write(_)) => true,
            (Principal::HostWritingAws, step) => Principal::Host.covers(step),
            (_, Step::Observe | Step::ReadStatus) => true,
            // The backends run on the host only.
            (Principal::Host, Step::BackendStorage) => true,
            (_, Step::BackendStorage) => false,
            // CI neither follows the pointer nor reports a host's status.
            (Principal::Ci, Step::Follow | Step::Report) => false,
            // CI writes the value from its own environment; it never reads it back.
            (Principal::Ci, Step::ReadSecret) => false,
            (Principal::Ci, _) => true,
            (Principal::Host, Step::Lease | Step::Follow | Step::Report | Step::ReadSecret) => true,
            (Principal::Readonly | Principal::Host, _) => false,
        }
    }

    /// The name `--for` takes.
    pub fn name(self) -> &'static str {
        match self {
            Principal::Ci => "ci",
            Principal::Readonly => "readonly",
            Principal::Host | Principal::HostWritingAws => "host",
        }
    }
}

/// The stack's own resources, by name: what the policy's ARNs are scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `aws` (or `aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// The stack's region.
    pub region: String,
    /// The account the stack lives in.
    pub account: String,
    /// The Stack's name (the value of the `stackwarden:stack` tag).
    pub stack: String,
    /// The environment (its delivery pointer and status snapshot are its own).
    pub environment: String,
    /// Bucket names.
    pub buckets: Vec<String>,
    /// Parameter names (`/project/env/grafana/admin-password`).
    pub parameters: Vec<String>,
    /// Instance profile names (their roles carry the same names).
    pub instance_profiles: Vec<String>,
    /// Target group names.
    pub target_groups: Vec<String>,
    /// Load balancer names whose listeners carry the stack's rules.
    pub load_balancers: Vec<String>,
    /// Where each backend keeps its data, from its shipped config.
    pub backends: Vec<crate::manifest::backends::Layout>,
}

impl Scope {
    /// The names a desired state declares, with the account of the credentials in use, and
    /// the backends' layouts its configs give; an error when a layout cannot be derived or
    /// may not be granted (the same check validation makes).
    pub fn of(
        desired: &Desired,
        account: &str,
    ) -> Result<Scope, crate::manifest::backends::LayoutErrors> {
        let backends = crate::manifest::backends::layouts(desired, DELIVERY_PREFIX)?;
        let lookups = |t: LookupType| -> Vec<String> {
            desired
                .lookups()
                .filter(|(_, l)| l.kind == t)
                .filter_map(|(_, l)| l.name.clone())
                .collect()
        };
        Ok(Scope {
            partition: partition_of(&desired.stack.region).to_string(),
            region: desired.stack.region.clone(),
            account: account.to_string(),
            stack: desired.stack_name.clone(),
            environment: desired.environment.clone(),
            buckets: desired.buckets().map(|(_, b)| b.name.clone()).collect(),
            parameters: desired.parameters().map(|(_, p)| p.name.clone()).collect(),
            instance_profiles: lookups(LookupType::InstanceProfile),
            target_groups: desired
                .target_groups()
                .map(|(_, t)| t.name.clone())
                .collect(),
            load_balancers: lookups(LookupType::LoadBalancer),
            backends,
        })
    }

    fn arns(&self, target: Target) -> Vec<String> {
        let (p, r, a) = (&self.partition, &self.region, &self.account);
        let each = |names: &[String], f: &dyn Fn(&str) -> String| -> Vec<String> {
            names.iter().map(|n| f(n)).collect()
        };
        match target {
            Target::Any => vec!["*".to_string()],
            Target::Nothing => Vec::new(),
            Target::Bucket => each(&self.buckets, &|b| format!("arn:{p}:s3:::{b}")),
            Target::LeaseObjects => each(&self.buckets, &|b| {
                format!("arn:{p}:s3:::{b}/{LEASE_OBJECTS}{}/*", self.environment)
            }),
            Target::Bundles => each(&self.buckets, &|b| {
                format!("arn:{p}:s3:::{b}/{DELIVERY_PREFIX}bundles/*")
            }),
            Target::Artifacts => each(&self.buckets, &|b| {
                format!("arn:{p}:s3:::{b}/{DELIVERY_PREFIX}artifacts/*")
            }),
            Target::Pointer => each(&self.buckets, &|b| {
                format!(
                    "arn:{p}:s3:::{b}/{DELIVERY_PREFIX}{}/current",
                    self.environment
                )
            }),
            Target::StatusSnapshot => each(&self.buckets, &|b| {
                format!(
                    "arn:{p}:s3:::{b}/{DELIVERY_PREFIX}{}/status.json",
                    self.environment
                )
            }),
            Target::Parameter => each(&self.parameters, &|n| {
                format!(
                    "arn:{p}:ssm:{r}:{a}:parameter/{}",
                    n.trim_start_matches('/')
                )
            }),
            Target::PublicParameter => vec![format!("arn:{p}:ssm:{r}::parameter/aws/service/*")],
            Target::InstanceProfile => each(&self.instance_profiles, &|n| {
                format!("arn:{p}:iam::{a}:instance-profile/{n}")
            }),
            Target::Role => each(&self.instance_profiles, &|n| {
                format!("arn:{p}:iam::{a}:role/{n}")
            }),
            Target::ManagedPolicy => vec![
                format!("arn:{p}:iam::aws:policy/*"),
                format!("arn:{p}:iam::{a}:policy/*"),
            ],
            Target::TargetGroup => each(&self.target_groups, &|n| {
                format!("arn:{p}:elasticloadbalancing:{r}:{a}:targetgroup/{n}/*")
            }),
            Target::ElbTagged => {
                let mut v = self.arns(Target::TargetGroup);
                v.extend(self.rule_arns());
                v
            }
            Target::ListenerRule => {
                let mut v = each(&self.load_balancers, &|n| {
                    format!("arn:{p}:elasticloadbalancing:{r}:{a}:listener/app/{n}/*")
                });
                v.extend(self.rule_arns());
                v
            }
            Target::Ec2Owned(types) | Target::Ec2Tags(types) => self.ec2_arns(types),
            Target::Ec2Create(tagged, _) => self.ec2_arns(tagged),
        }
    }

    fn rule_arns(&self) -> Vec<String> {
        let (p, r, a) = (&self.partition, &self.region, &self.account);
        self.load_balancers
            .iter()
            .map(|n| format!("arn:{p}:elasticloadbalancing:{r}:{a}:listener-rule/app/{n}/*"))
            .collect()
    }

    fn ec2_arns(&self, types: &[&str]) -> Vec<String> {
        let (p, r, a) = (&self.partition, &self.region, &self.account);
        types
            .iter()
            .map(|t| match *t {
                // Public AMIs belong to their publisher's account, not ours.
                "image" => format!("arn:{p}:ec2:{r}::image/*"),
                t => format!("arn:{p}:ec2:{r}:{a}:{t}/*"),
            })
            .collect()
    }
}

/// The partition a region belongs to.
fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// One statement before rendering: its actions share resources and conditions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    resources: Vec<String>,
    condition: Option<String>,
}

/// The actions `principal` needs, each with the steps that need it, sorted by action.
pub fn actions(principal: Principal) -> BTreeMap<&'static str, Vec<Step>> {
    let mut out: BTreeMap<&'static str, Vec<Step>> = BTreeMap::new();
    for o in OPERATIONS {
        if o.target == Target::Nothing {
            continue;
        }
        let steps: Vec<Step> = o
            .steps
            .iter()
            .copied()
            .filter(|s| principal.covers(*s))
            .collect();
        if steps.is_empty() {
            continue;
        }
        let mut add = |action: &'static str| {
            let entry = out.entry(action).or_default();
            entry.extend(steps.iter().copied());
            entry.sort();
            entry.dedup();
        };
        add(o.action);
        for i in IMPLIED.iter().filter(|i| i.call == o.call) {
            add(i.action);
        }
    }
    if principal.covers(Step::BackendStorage) {
        for b in BACKEND_ACTIONS {
            let entry = out.entry(b.action).or_default();
            entry.push(Step::BackendStorage);
            entry.sort();
            entry.dedup();
        }
    }
    out
}

/// The IAM policy document `principal` needs for the stack `scope` names.
pub fn policy(principal: Principal, scope: &Scope) -> Value {
    // A stack's identity is its name and its environment: what is created must carry both
    // tags, and what is written must carry this environment's tag, or none yet (a resource
    // from before the tag existed, adopted by adding it; a root volume, never re-tagged).
    // Another environment's resources of the same stack stay out of reach.
    let stack_tag = |key: &str| {
        let stack = format!("{key}/{STACK_TAG}");
        let env = format!("{key}/{ENV_TAG}");
        if key == "aws:RequestTag" {
            json!({ "StringEquals": { stack: scope.stack, env: scope.environment } })
        } else {
            json!({
                "StringEquals": { stack: scope.stack },
                "StringEqualsIfExists": { env: scope.environment }
            })
        }
    };
    let mut grants: BTreeMap<Grant, (Vec<&'static str>, Value)> = BTreeMap::new();
    let mut grant = |action: &'static str, resources: Vec<String>, condition: Value| {
        if resources.is_empty() {
            return;
        }
        let key = Grant {
            resources,
            condition: (!condition.is_null()).then(|| condition.to_string()),
        };
        let entry = grants.entry(key).or_insert((Vec::new(), condition));
        if !entry.0.contains(&action) {
            entry.0.push(action);
        }
    };
    for o in OPERATIONS {
        if !o.steps.iter().any(|s| principal.covers(*s)) {
            continue;
        }
        match o.target {
            Target::Nothing => {}
            Target::Ec2Owned(_) => {
                grant(o.action, scope.arns(o.target), stack_tag("aws:ResourceTag"))
            }
            Target::Ec2Create(_, used) => {
                grant(o.action, scope.arns(o.target), stack_tag("aws:RequestTag"));
                grant(o.action, scope.ec2_arns(used), Value::Null);
            }
            Target::Ec2Tags(_) => {
                grant(o.action, scope.arns(o.target), stack_tag("aws:ResourceTag"));
                let creates: Vec<&str> = OPERATIONS
                    .iter()
                    .filter(|c| matches!(c.target, Target::Ec2Create(..)))
                    .filter_map(|c| c.action.strip_prefix("ec2:"))
                    .collect();
                grant(
                    o.action,
                    scope.arns(o.target),
                    json!({ "StringEquals": { "ec2:CreateAction": creates } }),
                );
            }
            _ => grant(o.action, scope.arns(o.target), Value::Null),
        }
        for i in IMPLIED.iter().filter(|i| i.call == o.call) {
            match i.action {
                "iam:PassRole" => grant(
                    i.action,
                    scope.arns(Target::Role),
                    json!({ "StringEquals": { "iam:PassedToService": "ec2.amazonaws.com" } }),
                ),
                // Unconditioned: S3 checks it for a GetObject without an `s3:prefix` in the
                // request context, so a prefix condition would never match.
                "s3:ListBucket" => grant(i.action, scope.arns(Target::Bucket), Value::Null),
                other => grant(other, vec!["*".to_string()], Value::Null),
            }
        }
    }
    if principal.covers(Step::BackendStorage) {
        let p = &scope.partition;
        for layout in &scope.backends {
            for area in &layout.areas {
                let object = match &area.keys {
                    crate::manifest::backends::Keys::Prefix(prefix) => {
                        format!("arn:{p}:s3:::{}/{prefix}*", area.bucket)
                    }
                    crate::manifest::backends::Keys::Object(key) => {
                        format!("arn:{p}:s3:::{}/{key}", area.bucket)
                    }
                };
                for b in BACKEND_ACTIONS {
                    let resource = match b.action {
                        "s3:ListBucket" => format!("arn:{p}:s3:::{}", area.bucket),
                        _ => object.clone(),
                    };
                    grant(b.action, vec![resource], Value::Null);
                }
            }
        }
    }
    let mut statements: Vec<(Vec<&'static str>, Grant, Value)> = grants
        .into_iter()
        .map(|(g, (mut actions, condition))| {
            actions.sort_unstable();
            (actions, g, condition)
        })
        .collect();
    statements.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let rendered: Vec<Value> = statements
        .into_iter()
        .map(|(actions, g, condition)| {
            let mut s = serde_json::Map::new();
            s.insert("Effect".into(), json!("Allow"));
            s.insert("Action".into(), json!(actions));
            s.insert("Resource".into(), json!(g.resources));
            if !condition.is_null() {
                s.insert("Condition".into(), condition);
            }
            Value::Object(s)
        })
        .collect();
    json!({ "Version": "2012-10-17", "Statement": rendered })
}

/// A live role's policies against what a principal needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Comparison {
    /// Needed actions no Allow statement grants.
    pub lacking: Vec<&'static str>,
    /// Granted beyond the need: an action not needed, a wildcard, or a `NotAction` (which
    /// grants everything but a few).
    pub beyond: Vec<String>,
}

/// Compares the Allow statements of `documents` (IAM policy JSON) with what `principal` needs.
/// Actions only: resources, conditions and Deny statements are not weighed, so a role can
/// still be broader (or narrower) in what it may touch.
pub fn compare(
    documents: &[String],
    principal: Principal,
) -> Result<Comparison, serde_json::Error> {
    let needed = actions(principal);
    let mut granted: Vec<String> = Vec::new();
    let mut beyond: Vec<String> = Vec::new();
    for text in documents {
        let doc: Value = serde_json::from_str(text)?;
        let statements = match &doc["Statement"] {
            Value::Array(list) => list.clone(),
            one @ Value::Object(_) => vec![one.clone()],
            _ => Vec::new(),
        };
        for s in statements.iter().filter(|s| s["Effect"] == "Allow") {
            let list = |v: &Value| -> Vec<String> {
                match v {
                    Value::String(a) => vec![a.clone()],
                    Value::Array(l) => l
                        .iter()
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                }
            };
            for a in list(&s["NotAction"]) {
                beyond.push(format!("NotAction {a}"));
            }
            granted.extend(list(&s["Action"]));
        }
    }
    let lacking = needed
        .keys()
        .copied()
        .filter(|n| !granted.iter().any(|g| matches_action(g, n)))
        .collect();
    for g in &granted {
        let exact_and_needed =
            !g.contains(['*', '?']) && needed.keys().any(|n| n.eq_ignore_ascii_case(g));
        if !exact_and_needed {
            beyond.push(g.clone());
        }
    }
    beyond.sort();
    beyond.dedup();
    Ok(Comparison { lacking, beyond })
}

/// IAM's action matching: case-insensitive, `*` any run of characters, `?` one character.
fn matches_action(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &a[1..]),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => go(&p[1..], &a[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

#[cfg(test)]
mod tests;
