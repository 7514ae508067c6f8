//! Every hand-made AWS change the stack's resources can suffer is alerted and resolved by the
//! daemon: one enforce-mode daemon against moto, alerting a real Alertmanager whose webhook
//! receiver records what it delivers. Each finding is made by hand through the AWS SDK, in
//! turn; the test waits for Alertmanager to notify it firing, then resolved once the daemon
//! has repaired it, and checks the repair in AWS itself.

use crate::alerts::aws_daemon_alerting;
use crate::support::alertmanager::Notification;
use aws_sdk_ec2::types::{Filter, IpPermission, Tag, UserIdGroupPair};
use aws_sdk_s3::types::{
    BucketCannedAcl, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
};
use aws_sdk_ssm::types::ResourceTypeForTagging;
use std::time::Duration;

/// Generous bound for a finding to be seen, alerted, repaired and resolved.
const ROUND_TRIP: Duration = Duration::from_secs(120);
const STACK_TAG: &str = "stackwarden:stack";
const PARAMETER: &str = "/durable-code/local/grafana/admin-password";
const SG_NAME: &str = "durable-code-local-observability-sg";
const DESCRIPTION: &str = "changed by hand";

/// How many notifications carry `alertname` on `kind`/`resource` in state `status`.
fn count(n: &[Notification], alertname: &str, kind: &str, resource: &str, status: &str) -> usize {
    n.iter()
        .filter(|n| {
            n.alerts.iter().any(|a| {
                let label = |k: &str| a.labels.get(k).map(String::as_str);
                a.status == status
                    && label("alertname") == Some(alertname)
                    && label("kind") == Some(kind)
                    && label("resource") == Some(resource)
            })
        })
        .count()
}

/// The hand-made changes of issue 21 that concern AWS.
#[derive(Debug, Clone, Copy)]
enum Finding {
    /// A bucket policy granting `s3:*` to another account.
    BucketPolicyCrossAccount,
    /// A bucket policy granting `s3:GetObject` on every object to `*`.
    BucketPolicyPublic,
    /// The bucket's ACL set to `public-read` (ACLs switched back on first, as S3 requires).
    PublicReadAcl,
    /// Every tag of the instance deleted, `Name` included.
    InstanceTagsRemoved,
    /// The parameter's ownership and spec-hash tags removed.
    ParameterTagsRemoved,
    /// An ingress rule's description changed.
    RuleDescription,
}

struct Clients {
    ec2: aws_sdk_ec2::Client,
    s3: aws_sdk_s3::Client,
    ssm: aws_sdk_ssm::Client,
}

impl Clients {
    async fn bucket(&self) -> String {
        let buckets = self.s3.list_buckets().send().await.unwrap();
        for b in buckets.buckets() {
            let name = b.name().unwrap().to_string();
            if let Ok(t) = self.s3.get_bucket_tagging().bucket(&name).send().await
                && t.tag_set().iter().any(|t| t.key() == STACK_TAG)
            {
                return name;
            }
        }
        panic!("no bucket of the stack");
    }

    async fn bucket_policy(&self) -> Option<String> {
        let bucket = self.bucket().await;
        self.s3
            .get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .ok()
            .and_then(|o| o.policy().map(str::to_string))
    }

    async fn put_policy(&self, statement: &str) {
        let bucket = self.bucket().await;
        let statement = statement.replace("BUCKET", &bucket);
        self.s3
            .put_bucket_policy()
            .bucket(&bucket)
            .policy(format!(
                r#"{{"Version":"2012-10-17","Statement":[{statement}]}}"#
            ))
            .send()
            .await
            .unwrap();
    }

    async fn instance_id(&self) -> String {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let ids: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        assert_eq!(ids.len(), 1, "exactly one instance: {ids:?}");
        ids[0].clone()
    }

    async fn instance_tags(&self, id: &str) -> Vec<String> {
        let tags = self
            .ec2
            .describe_tags()
            .filters(Filter::builder().name("resource-id").values(id).build())
            .send()
            .await
            .unwrap();
        tags.tags()
            .iter()
            .filter_map(|t| t.key().map(str::to_string))
            .collect()
    }

    async fn parameter_tags(&self) -> Vec<String> {
        let tags = self
            .ssm
            .list_tags_for_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(PARAMETER)
            .send()
            .await
            .unwrap();
        tags.tag_list()
            .iter()
            .map(|t| t.key().to_string())
            .collect()
    }

    /// The group's ingress rule from another group, and the group's id.
    async fn pair_rule(&self) -> (String, IpPermission) {
        let groups = self
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(SG_NAME).build())
            .send()
            .await
            .unwrap();
        let group = &groups.security_groups()[0];
        let perm = group
            .ip_permissions()
            .iter()
            .find(|p| !p.user_id_group_pairs().is_empty())
            .expect("an ingress rule from a group")
            .clone();
        (group.group_id().unwrap().to_string(), perm)
    }
}

impl Finding {
    /// The alert's `kind` and `resource` labels.
    fn resource(self) -> (&'static str, &'static str) {
        match self {
            Finding::BucketPolicyCrossAccount
            | Finding::BucketPolicyPublic
            | Finding::PublicReadAcl => ("Bucket", "data"),
            Finding::InstanceTagsRemoved => ("Instance", "observability"),
            Finding::ParameterTagsRemoved => ("Parameter", "grafana-admin-password"),
            Finding::RuleDescription => ("SecurityGroup", "observability"),
        }
    }

    /// Makes the change by hand, as a person with the AWS CLI would.
    async fn make(self, c: &Clients) {
        match self {
            Finding::BucketPolicyCrossAccount => {
                c.put_policy(r#"{"Sid":"cross","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"s3:*","Resource":["arn:aws:s3:::BUCKET","arn:aws:s3:::BUCKET/*"]}"#).await;
            }
            Finding::BucketPolicyPublic => {
                c.put_policy(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::BUCKET/*"}"#).await;
            }
            Finding::PublicReadAcl => {
                let bucket = c.bucket().await;
                let rule = OwnershipControlsRule::builder()
                    .object_ownership(ObjectOwnership::BucketOwnerPreferred)
                    .build()
                    .unwrap();
                c.s3.put_bucket_ownership_controls()
                    .bucket(&bucket)
                    .ownership_controls(OwnershipControls::builder().rules(rule).build().unwrap())
                    .send()
                    .await
                    .unwrap();
                c.s3.put_bucket_acl()
                    .bucket(&bucket)
                    .acl(BucketCannedAcl::PublicRead)
                    .send()
                    .await
                    .unwrap();
            }
            Finding::InstanceTagsRemoved => {
                let id = c.instance_id().await;
                let keys: Vec<Tag> = c
                    .instance_tags(&id)
                    .await
                    .iter()
                    .map(|k| Tag::builder().key(k).build())
                    .collect();
                assert!(!keys.is_empty());
                c.ec2
                    .delete_tags()
                    .resources(&id)
                    .set_tags(Some(keys))
                    .send()
                    .await
                    .unwrap();
            }
            Finding::ParameterTagsRemoved => {
                let keys: Vec<String> = c
                    .parameter_tags()
                    .await
                    .into_iter()
                    .filter(|k| k == "ManagedBy" || k.starts_with("stackwarden:"))
                    .collect();
                assert!(keys.len() >= 2, "{keys:?}");
                c.ssm
                    .remove_tags_from_resource()
                    .resource_type(ResourceTypeForTagging::Parameter)
                    .resource_id(PARAMETER)
                    .set_tag_keys(Some(keys))
                    .send()
                    .await
                    .unwrap();
            }
            Finding::RuleDescription => {
                // Revoke and authorize again: moto keeps a pair's description through
                // UpdateSecurityGroupRuleDescriptionsIngress (docs/quirks.md).
                let (gid, perm) = c.pair_rule().await;
                let pair = perm.user_id_group_pairs()[0].clone();
                let only = |description: Option<&str>| {
                    IpPermission::builder()
                        .set_ip_protocol(perm.ip_protocol().map(str::to_string))
                        .set_from_port(perm.from_port())
                        .set_to_port(perm.to_port())
                        .user_id_group_pairs(
                            UserIdGroupPair::builder()
                                .set_group_id(pair.group_id().map(str::to_string))
                                .set_description(description.map(str::to_string))
                                .build(),
                        )
                        .build()
                };
                c.ec2
                    .revoke_security_group_ingress()
                    .group_id(&gid)
                    .ip_permissions(only(pair.description()))
                    .send()
                    .await
                    .unwrap();
                c.ec2
                    .authorize_security_group_ingress()
                    .group_id(&gid)
                    .ip_permissions(only(Some(DESCRIPTION)))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// What AWS itself says once the daemon has repaired it.
    async fn assert_repaired(self, c: &Clients) {
        match self {
            Finding::BucketPolicyCrossAccount | Finding::BucketPolicyPublic => {
                assert_eq!(c.bucket_policy().await, None, "{self:?}");
            }
            Finding::PublicReadAcl => {
                let acl =
                    c.s3.get_bucket_acl()
                        .bucket(c.bucket().await)
                        .send()
                        .await
                        .unwrap();
                let owner = acl.owner().and_then(|o| o.id()).map(str::to_string);
                assert!(
                    acl.grants().iter().all(|g| g
                        .grantee()
                        .and_then(|g| g.id())
                        .map(str::to_string)
                        == owner),
                    "only the owner's grant: {:?}",
                    acl.grants()
                );
            }
            Finding::InstanceTagsRemoved => {
                // The original instance, the only one, wearing its tags again.
                let id = c.instance_id().await;
                let tags = c.instance_tags(&id).await;
                assert!(
                    tags.iter().any(|k| k == "Name") && tags.iter().any(|k| k == STACK_TAG),
                    "{tags:?}"
                );
            }
            Finding::ParameterTagsRemoved => {
                let tags = c.parameter_tags().await;
                assert!(
                    tags.iter().any(|k| k == "ManagedBy") && tags.iter().any(|k| k == STACK_TAG),
                    "{tags:?}"
                );
            }
            Finding::RuleDescription => {
                let (_, perm) = c.pair_rule().await;
                let description = perm.user_id_group_pairs()[0].description();
                assert_ne!(description, Some(DESCRIPTION));
            }
        }
    }
}

#[tokio::test]
async fn every_hand_made_aws_finding_is_alerted_and_resolved_by_the_daemon() {
    let (moto, am, d) = aws_daemon_alerting("enforce").await;
    let config = moto.sdk_config().await;
    let c = Clients {
        ec2: aws_sdk_ec2::Client::new(&config),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        ),
        ssm: aws_sdk_ssm::Client::new(&config),
    };
    let original = c.instance_id().await;
    for finding in [
        Finding::BucketPolicyCrossAccount,
        Finding::BucketPolicyPublic,
        Finding::PublicReadAcl,
        Finding::InstanceTagsRemoved,
        Finding::ParameterTagsRemoved,
        Finding::RuleDescription,
    ] {
        let (kind, resource) = finding.resource();
        let n = am.sink.notifications();
        let (fired, resolved) = (
            count(&n, "StackDrift", kind, resource, "firing"),
            count(&n, "StackDrift", kind, resource, "resolved"),
        );
        finding.make(&c).await;
        am.wait_until(&format!("{finding:?} is alerted"), ROUND_TRIP, || {
            count(
                &am.sink.notifications(),
                "StackDrift",
                kind,
                resource,
                "firing",
            ) > fired
        });
        am.wait_until(&format!("{finding:?} is resolved"), ROUND_TRIP, || {
            count(
                &am.sink.notifications(),
                "StackDrift",
                kind,
                resource,
                "resolved",
            ) > resolved
        });
        finding.assert_repaired(&c).await;
    }
    // The instance that lost its tags was adopted, never launched again beside it.
    assert_eq!(c.instance_id().await, original);
    drop(d);
}
