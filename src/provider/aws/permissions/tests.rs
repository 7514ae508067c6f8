//! The generated documents, pinned: a changed table shows here as a changed policy.

use super::*;
use crate::manifest::backends::{Area, Backend, Keys, Layout};

const BUCKET: &str = "dc-dev-observability-123456789012";

/// A backend keeping its data under one prefix of the stack's bucket.
fn backend(backend: Backend, prefix: &str) -> Layout {
    Layout {
        backend,
        areas: vec![Area {
            bucket: BUCKET.into(),
            keys: Keys::Prefix(prefix.into()),
            path: String::new(),
            at: crate::model::SourceLocation::default(),
        }],
    }
}

fn scope() -> Scope {
    Scope {
        partition: "aws".into(),
        region: "us-east-1".into(),
        account: "123456789012".into(),
        stack: "observability".into(),
        environment: "dev".into(),
        buckets: vec!["dc-dev-observability-123456789012".into()],
        parameters: vec!["/dc/dev/grafana/admin-password".into()],
        instance_profiles: vec!["dc-dev-observability".into()],
        target_groups: vec!["dc-dev-faro-tg".into()],
        load_balancers: vec!["dc-dev-alb".into()],
        backends: vec![
            backend(Backend::Mimir, "mimir/"),
            backend(Backend::Loki, "loki/"),
            backend(Backend::Tempo, "tempo/"),
            backend(Backend::Pyroscope, "pyroscope/"),
        ],
    }
}

/// One line per statement: `actions | resources | condition`. Every field of the document
/// is in it, so comparing lines compares documents.
fn lines(doc: &Value) -> Vec<String> {
    assert_eq!(doc["Version"], "2012-10-17");
    let statements = doc["Statement"].as_array().expect("statements");
    statements
        .iter()
        .map(|s| {
            assert_eq!(s["Effect"], "Allow");
            let list = |v: &Value| -> String {
                v.as_array()
                    .expect("a list")
                    .iter()
                    .map(|x| x.as_str().expect("a string"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let keys = s.as_object().expect("a statement").len();
            let condition = match s.get("Condition") {
                Some(c) => c.to_string(),
                None => "-".to_string(),
            };
            assert_eq!(keys, if condition == "-" { 3 } else { 4 });
            format!(
                "{} | {} | {}",
                list(&s["Action"]),
                list(&s["Resource"]),
                condition
            )
        })
        .collect()
}

#[test]
fn the_ci_policy_is_exactly_this() {
    let expected: &[&str] = &[
        "ec2:AssociateIamInstanceProfile ec2:ModifyInstanceAttribute ec2:ModifyInstanceMetadataOptions ec2:ReplaceIamInstanceProfileAssociation ec2:StartInstances ec2:StopInstances ec2:TerminateInstances | arn:aws:ec2:us-east-1:123456789012:instance/* | {\"StringEquals\":{\"aws:ResourceTag/stackwarden:stack\":\"observability\"},\"StringEqualsIfExists\":{\"aws:ResourceTag/stackwarden:env\":\"dev\"}}",
        "ec2:AuthorizeSecurityGroupEgress ec2:AuthorizeSecurityGroupIngress ec2:DeleteSecurityGroup ec2:RevokeSecurityGroupEgress ec2:RevokeSecurityGroupIngress | arn:aws:ec2:us-east-1:123456789012:security-group/* | {\"StringEquals\":{\"aws:ResourceTag/stackwarden:stack\":\"observability\"},\"StringEqualsIfExists\":{\"aws:ResourceTag/stackwarden:env\":\"dev\"}}",
        "ec2:CreateSecurityGroup | arn:aws:ec2:us-east-1:123456789012:security-group/* | {\"StringEquals\":{\"aws:RequestTag/stackwarden:env\":\"dev\",\"aws:RequestTag/stackwarden:stack\":\"observability\"}}",
        "ec2:CreateSecurityGroup | arn:aws:ec2:us-east-1:123456789012:vpc/* | -",
        "ec2:CreateTags | arn:aws:ec2:us-east-1:123456789012:instance/* arn:aws:ec2:us-east-1:123456789012:volume/* arn:aws:ec2:us-east-1:123456789012:security-group/* | {\"StringEquals\":{\"ec2:CreateAction\":[\"CreateSecurityGroup\",\"RunInstances\"]}}",
        "ec2:CreateTags ec2:DeleteTags | arn:aws:ec2:us-east-1:123456789012:instance/* arn:aws:ec2:us-east-1:123456789012:volume/* arn:aws:ec2:us-east-1:123456789012:security-group/* | {\"StringEquals\":{\"aws:ResourceTag/stackwarden:stack\":\"observability\"},\"StringEqualsIfExists\":{\"aws:ResourceTag/stackwarden:env\":\"dev\"}}",
        "ec2:DescribeImages ec2:DescribeInstances ec2:DescribeSecurityGroupRules ec2:DescribeSecurityGroups ec2:DescribeSubnets ec2:DescribeVolumes ec2:DescribeVpcs elasticloadbalancing:DescribeListeners elasticloadbalancing:DescribeLoadBalancers elasticloadbalancing:DescribeRules elasticloadbalancing:DescribeTags elasticloadbalancing:DescribeTargetGroupAttributes elasticloadbalancing:DescribeTargetGroups elasticloadbalancing:DescribeTargetHealth iam:ListPolicies ssm:DescribeInstanceInformation | * | -",
        "ec2:ModifyVolume | arn:aws:ec2:us-east-1:123456789012:volume/* | {\"StringEquals\":{\"aws:ResourceTag/stackwarden:stack\":\"observability\"},\"StringEqualsIfExists\":{\"aws:ResourceTag/stackwarden:env\":\"dev\"}}",
        "ec2:RunInstances | arn:aws:ec2:us-east-1:123456789012:instance/* arn:aws:ec2:us-east-1:123456789012:volume/* | {\"StringEquals\":{\"aws:RequestTag/stackwarden:env\":\"dev\",\"aws:RequestTag/stackwarden:stack\":\"observability\"}}",
        "ec2:RunInstances | arn:aws:ec2:us-east-1:123456789012:subnet/* arn:aws:ec2:us-east-1:123456789012:security-group/* arn:aws:ec2:us-east-1:123456789012:network-interface/* arn:aws:ec2:us-east-1::image/* | -",
        "elasticloadbalancing:AddTags elasticloadbalancing:RemoveTags | arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/dc-dev-faro-tg/* arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/dc-dev-alb/* | -",
        "elasticloadbalancing:CreateRule elasticloadbalancing:DeleteRule elasticloadbalancing:ModifyRule | arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/dc-dev-alb/* arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/dc-dev-alb/* | -",
        "elasticloadbalancing:CreateTargetGroup elasticloadbalancing:DeleteTargetGroup elasticloadbalancing:DeregisterTargets elasticloadbalancing:ModifyTargetGroup elasticloadbalancing:ModifyTargetGroupAttributes elasticloadbalancing:RegisterTargets | arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/dc-dev-faro-tg/* | -",
        "iam:GetInstanceProfile | arn:aws:iam::123456789012:instance-profile/dc-dev-observability | -",
        "iam:GetPolicy iam:GetPolicyVersion | arn:aws:iam::aws:policy/* arn:aws:iam::123456789012:policy/* | -",
        "iam:GetRolePolicy iam:ListAttachedRolePolicies iam:ListRolePolicies | arn:aws:iam::123456789012:role/dc-dev-observability | -",
        "iam:PassRole | arn:aws:iam::123456789012:role/dc-dev-observability | {\"StringEquals\":{\"iam:PassedToService\":\"ec2.amazonaws.com\"}}",
        "s3:CreateBucket s3:DeleteBucketPolicy s3:GetBucketAcl s3:GetBucketOwnershipControls s3:GetBucketPolicy s3:GetBucketPublicAccessBlock s3:GetBucketTagging s3:GetBucketVersioning s3:GetEncryptionConfiguration s3:GetLifecycleConfiguration s3:ListBucket s3:PutBucketAcl s3:PutBucketOwnershipControls s3:PutBucketPolicy s3:PutBucketPublicAccessBlock s3:PutBucketTagging s3:PutBucketVersioning s3:PutEncryptionConfiguration s3:PutLifecycleConfiguration | arn:aws:s3:::dc-dev-observability-123456789012 | -",
        "s3:GetObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/dev/status.json | -",
        "s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/artifacts/* | -",
        "s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/bundles/* | -",
        "s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/dev/current | -",
        "s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/lease/dev/* | -",
        "ssm:AddTagsToResource ssm:GetParameterHistory ssm:ListTagsForResource ssm:PutParameter | arn:aws:ssm:us-east-1:123456789012:parameter/dc/dev/grafana/admin-password | -",
        "ssm:GetParameter | arn:aws:ssm:us-east-1::parameter/aws/service/* | -",
    ];
    assert_eq!(lines(&policy(Principal::Ci, &scope())), expected);
}

#[test]
fn the_readonly_policy_is_exactly_this() {
    let expected: &[&str] = &[
        "ec2:DescribeImages ec2:DescribeInstances ec2:DescribeSecurityGroupRules ec2:DescribeSecurityGroups ec2:DescribeSubnets ec2:DescribeVolumes ec2:DescribeVpcs elasticloadbalancing:DescribeListeners elasticloadbalancing:DescribeLoadBalancers elasticloadbalancing:DescribeRules elasticloadbalancing:DescribeTags elasticloadbalancing:DescribeTargetGroupAttributes elasticloadbalancing:DescribeTargetGroups elasticloadbalancing:DescribeTargetHealth iam:ListPolicies ssm:DescribeInstanceInformation | * | -",
        "iam:GetInstanceProfile | arn:aws:iam::123456789012:instance-profile/dc-dev-observability | -",
        "iam:GetPolicy iam:GetPolicyVersion | arn:aws:iam::aws:policy/* arn:aws:iam::123456789012:policy/* | -",
        "iam:GetRolePolicy iam:ListAttachedRolePolicies iam:ListRolePolicies | arn:aws:iam::123456789012:role/dc-dev-observability | -",
        "s3:GetBucketAcl s3:GetBucketOwnershipControls s3:GetBucketPolicy s3:GetBucketPublicAccessBlock s3:GetBucketTagging s3:GetBucketVersioning s3:GetEncryptionConfiguration s3:GetLifecycleConfiguration s3:ListBucket | arn:aws:s3:::dc-dev-observability-123456789012 | -",
        "s3:GetObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/artifacts/* | -",
        "s3:GetObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/dev/status.json | -",
        "ssm:GetParameter | arn:aws:ssm:us-east-1::parameter/aws/service/* | -",
        "ssm:GetParameterHistory ssm:ListTagsForResource | arn:aws:ssm:us-east-1:123456789012:parameter/dc/dev/grafana/admin-password | -",
    ];
    assert_eq!(lines(&policy(Principal::Readonly, &scope())), expected);
}

#[test]
fn the_host_policy_is_exactly_this() {
    let expected: &[&str] = &[
        "ec2:DescribeImages ec2:DescribeInstances ec2:DescribeSecurityGroupRules ec2:DescribeSecurityGroups ec2:DescribeSubnets ec2:DescribeVolumes ec2:DescribeVpcs elasticloadbalancing:DescribeListeners elasticloadbalancing:DescribeLoadBalancers elasticloadbalancing:DescribeRules elasticloadbalancing:DescribeTags elasticloadbalancing:DescribeTargetGroupAttributes elasticloadbalancing:DescribeTargetGroups elasticloadbalancing:DescribeTargetHealth iam:ListPolicies ssm:DescribeInstanceInformation | * | -",
        "iam:GetInstanceProfile | arn:aws:iam::123456789012:instance-profile/dc-dev-observability | -",
        "iam:GetPolicy iam:GetPolicyVersion | arn:aws:iam::aws:policy/* arn:aws:iam::123456789012:policy/* | -",
        "iam:GetRolePolicy iam:ListAttachedRolePolicies iam:ListRolePolicies | arn:aws:iam::123456789012:role/dc-dev-observability | -",
        "s3:DeleteObject s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/loki/* | -",
        "s3:DeleteObject s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/mimir/* | -",
        "s3:DeleteObject s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/pyroscope/* | -",
        "s3:DeleteObject s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/tempo/* | -",
        "s3:GetBucketAcl s3:GetBucketOwnershipControls s3:GetBucketPolicy s3:GetBucketPublicAccessBlock s3:GetBucketTagging s3:GetBucketVersioning s3:GetEncryptionConfiguration s3:GetLifecycleConfiguration s3:ListBucket | arn:aws:s3:::dc-dev-observability-123456789012 | -",
        "s3:GetObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/artifacts/* | -",
        "s3:GetObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/bundles/* | -",
        "s3:GetObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/dev/current | -",
        "s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/dev/status.json | -",
        "s3:GetObject s3:PutObject | arn:aws:s3:::dc-dev-observability-123456789012/stackwarden/lease/dev/* | -",
        "ssm:GetParameter | arn:aws:ssm:us-east-1::parameter/aws/service/* | -",
        "ssm:GetParameter ssm:GetParameterHistory ssm:ListTagsForResource | arn:aws:ssm:us-east-1:123456789012:parameter/dc/dev/grafana/admin-password | -",
    ];
    assert_eq!(lines(&policy(Principal::Host, &scope())), expected);
}

/// Verbs that only read, in the actions of every service stackwarden calls.
const READ_VERBS: [&str; 3] = ["Describe", "Get", "List"];

/// One writer per world: the host's policy holds no AWS write unless its team opts in with
/// `--allow-aws-writes`; then it holds every AWS write CI has, and still never publishes.
#[test]
fn the_host_writes_aws_only_when_opted_in_and_never_publishes() {
    let writes = |p: Principal| -> Vec<String> {
        actions(p)
            .into_iter()
            .filter(|(_, steps)| steps.iter().any(|s| matches!(s, Step::Write(_))))
            .map(|(a, _)| a.to_string())
            .collect()
    };
    assert_eq!(writes(Principal::Host), Vec::<String>::new());
    let opted = writes(Principal::HostWritingAws);
    assert_eq!(opted, writes(Principal::Ci));
    assert!(
        opted
            .iter()
            .any(|a| a == "ec2:AuthorizeSecurityGroupIngress"),
        "{opted:?}"
    );
    assert!(!Principal::HostWritingAws.covers(Step::Publish));
    assert!(Principal::HostWritingAws.covers(Step::Follow));
    assert!(Principal::HostWritingAws.covers(Step::BackendStorage));
}

#[test]
fn the_readonly_policy_has_no_write_action() {
    let doc = policy(Principal::Readonly, &scope());
    for s in doc["Statement"].as_array().expect("statements") {
        for a in s["Action"].as_array().expect("actions") {
            let a = a.as_str().expect("an action");
            let verb = a.split(':').nth(1).expect("service:Action");
            assert!(
                READ_VERBS.iter().any(|v| verb.starts_with(v)),
                "readonly grants {a}, which writes"
            );
        }
    }
    for (action, steps) in actions(Principal::Readonly) {
        assert!(
            steps
                .iter()
                .all(|s| matches!(s, Step::Observe | Step::ReadStatus)),
            "{action} is granted for {steps:?}"
        );
    }
}

#[test]
fn the_host_policy_writes_only_the_lease_its_status_snapshot_and_the_backends_data() {
    for (action, steps) in actions(Principal::Host) {
        assert!(
            steps.iter().all(|s| matches!(
                s,
                Step::Observe
                    | Step::Lease
                    | Step::Follow
                    | Step::Report
                    | Step::ReadStatus
                    | Step::ReadSecret
                    | Step::BackendStorage
            )),
            "the host is granted {action} for {steps:?}"
        );
    }
    // A container reaching the instance role through IMDS must not be able to hand the
    // daemon its desired state: every write is on the lease, the status snapshot or a
    // backend's own prefix.
    let own = [
        "/stackwarden/lease/dev/*",
        "/stackwarden/dev/status.json",
        "/mimir/*",
        "/loki/*",
        "/tempo/*",
        "/pyroscope/*",
    ];
    for line in lines(&policy(Principal::Host, &scope())) {
        if line.contains("s3:PutObject") || line.contains("s3:DeleteObject") {
            assert!(
                !line.contains("/bundles/") && !line.contains("/current"),
                "the host may write delivery objects: {line}"
            );
            let resources = line.split(" | ").nth(1).unwrap_or_default();
            assert!(
                resources
                    .split(' ')
                    .all(|r| own.iter().any(|o| r.ends_with(o))),
                "the host writes beyond its own keys: {line}"
            );
        }
    }
    let writes: Vec<&str> = actions(Principal::Host)
        .into_keys()
        .filter(|a| {
            let verb = a.split(':').nth(1).unwrap_or_default();
            !READ_VERBS.iter().any(|v| verb.starts_with(v))
        })
        .collect();
    assert_eq!(writes, vec!["s3:DeleteObject", "s3:PutObject"]);
}

#[test]
fn only_the_host_is_granted_the_backends_keys() {
    for p in [Principal::Ci, Principal::Readonly] {
        let doc = policy(p, &scope()).to_string();
        assert!(
            !doc.contains("/mimir/"),
            "{} reaches Mimir's data",
            p.name()
        );
        assert!(!doc.contains("s3:DeleteObject"), "{} may delete", p.name());
    }
}

#[test]
fn a_backend_config_with_another_prefix_moves_its_grant() {
    let config = |prefix: &str| {
        let text = format!(
            "common:\n  storage:\n    backend: s3\n    s3:\n      bucket_name: {BUCKET}\n\
             blocks_storage:\n  storage_prefix: {prefix}\n"
        );
        let doc = crate::manifest::yaml::parse(&text)
            .expect("yaml")
            .swap_remove(0);
        crate::manifest::backends::layout(crate::manifest::backends::Config {
            backend: Backend::Mimir,
            resource: "ConfigFile/mimir-config",
            file: std::path::Path::new("config/mimir.yaml"),
            doc: &doc,
        })
        .expect("layout")
    };
    let with = |layout: Layout| {
        let mut s = scope();
        s.backends = vec![layout];
        policy(Principal::Host, &s).to_string()
    };
    let shipped = with(config("mimir"));
    let moved = with(config("metrics"));
    assert!(shipped.contains(&format!("{BUCKET}/mimir/*")), "{shipped}");
    assert!(!moved.contains("/mimir/"), "{moved}");
    assert!(moved.contains(&format!("{BUCKET}/metrics/*")), "{moved}");
}

#[test]
fn every_ec2_write_is_conditioned_on_the_stack_tag() {
    let doc = policy(Principal::Ci, &scope());
    for s in doc["Statement"].as_array().expect("statements") {
        let actions: Vec<&str> = s["Action"]
            .as_array()
            .expect("actions")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let ec2_write = actions
            .iter()
            .any(|a| a.starts_with("ec2:") && !a.starts_with("ec2:Describe"));
        let resources = s["Resource"].to_string();
        // The used side of a create (subnet, image, VPC, the ENI and groups an instance
        // is launched with) carries no tag of ours.
        let owned = ["instance/", "volume/", "security-group/"]
            .iter()
            .any(|t| resources.contains(t))
            && !resources.contains("subnet/")
            && !resources.contains("vpc/");
        if ec2_write && owned {
            let c = s["Condition"].to_string();
            assert!(
                c.contains("aws:ResourceTag/stackwarden:stack")
                    || c.contains("aws:RequestTag/stackwarden:stack")
                    || c.contains("ec2:CreateAction"),
                "{actions:?} on {resources} is not conditioned on the stack's tag"
            );
            // The stack's identity includes its environment: another environment's resources
            // of the same stack are out of reach wherever the stack's are in reach.
            for key in ["aws:ResourceTag", "aws:RequestTag"] {
                if c.contains(&format!("{key}/stackwarden:stack")) {
                    assert!(
                        c.contains(&format!("\"{key}/stackwarden:env\":\"dev\"")),
                        "{actions:?} on {resources} is not conditioned on the environment: {c}"
                    );
                }
            }
        }
    }
}

#[test]
fn each_policy_grants_only_actions_of_the_table() {
    let mut known: Vec<&str> = OPERATIONS.iter().map(|o| o.action).collect();
    known.extend(IMPLIED.iter().map(|i| i.action));
    known.extend(BACKEND_ACTIONS.iter().map(|b| b.action));
    for p in [Principal::Ci, Principal::Readonly, Principal::Host] {
        let doc = policy(p, &scope());
        let mut granted: Vec<&str> = doc["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .flat_map(|s| s["Action"].as_array().expect("actions").iter())
            .filter_map(|a| a.as_str())
            .collect();
        granted.sort_unstable();
        granted.dedup();
        let listed: Vec<&str> = actions(p).into_keys().collect();
        assert_eq!(granted, listed, "{}", p.name());
        assert!(granted.iter().all(|a| known.contains(a)));
    }
}

#[test]
fn every_implied_action_follows_a_call_in_the_table() {
    for i in IMPLIED {
        assert!(
            OPERATIONS.iter().any(|o| o.call == i.call),
            "{} is implied by {}, which is not in the table",
            i.action,
            i.call
        );
    }
}

#[test]
fn a_role_holding_the_host_policy_lacks_nothing_and_holds_nothing_beyond() {
    let doc = policy(Principal::Host, &scope()).to_string();
    assert_eq!(
        compare(&[doc], Principal::Host).expect("json"),
        Comparison::default()
    );
}

#[test]
fn a_role_is_told_what_it_lacks_and_what_it_holds_beyond() {
    let doc = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Effect": "Allow", "Action": ["ec2:Describe*", "s3:*Object", "ec2:RunInstances"], "Resource": "*" },
            { "Effect": "Allow", "NotAction": "iam:*", "Resource": "*" },
            { "Effect": "Deny", "Action": "ssm:*", "Resource": "*" }
        ]
    })
    .to_string();
    let c = compare(&[doc], Principal::Readonly).expect("json");
    assert!(c.lacking.contains(&"iam:GetInstanceProfile"), "{c:?}");
    assert!(c.lacking.contains(&"ssm:GetParameterHistory"), "{c:?}");
    assert!(!c.lacking.iter().any(|a| a.starts_with("ec2:")), "{c:?}");
    assert_eq!(
        c.beyond,
        vec![
            "NotAction iam:*",
            "ec2:Describe*",
            "ec2:RunInstances",
            "s3:*Object"
        ]
    );
}

#[test]
fn action_patterns_match_as_iam_does() {
    assert!(matches_action("ec2:Describe*", "ec2:DescribeVpcs"));
    assert!(matches_action("EC2:describevpcs", "ec2:DescribeVpcs"));
    assert!(matches_action("s3:?etObject", "s3:GetObject"));
    assert!(matches_action("*", "s3:GetObject"));
    assert!(!matches_action("ec2:Describe*", "ec2:RunInstances"));
    assert!(!matches_action("s3:GetObject", "s3:GetObjectAcl"));
}
