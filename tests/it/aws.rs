//! The AWS provider against a real moto server, seeded like the local world, with the shipped
//! manifests (`--env local`). Drift is made with the SDK directly, as a person would with the
//! console; each drift must show in a plan, be repaired by ONE apply, and be gone after.

use crate::support::world::{PASSWORD, World, open_ssh_to_the_world};
use stackwarden::engine::Engine;
use stackwarden::model::{Ensure, Kind, Spec};
use stackwarden::plan::{Action, Plan};
use stackwarden::provider::CallKind;
use stackwarden::provider::aws::AwsProvider;

/// Proven least privilege: the generated IAM policies against enforcing IAM.
mod least_privilege;

/// What only these tests read.
impl World {
    async fn instance(&self) -> aws_sdk_ec2::types::Instance {
        let name = self.resource_name(Kind::Instance);
        let out = self
            .ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:Name")
                    .values(name)
                    .build(),
            )
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .expect("describe instances");
        let all: Vec<_> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect();
        assert_eq!(all.len(), 1, "exactly one running instance: {all:?}");
        all[0].clone()
    }

    async fn listener_rule(&self) -> aws_sdk_elasticloadbalancingv2::types::Rule {
        let rules = self
            .elbv2
            .describe_rules()
            .listener_arn(self.http_listener().await)
            .send()
            .await
            .expect("rules");
        rules
            .rules()
            .iter()
            .find(|r| r.priority() == Some("91"))
            .expect("rule 91")
            .clone()
    }

    async fn ingress_rule_id(&self, port: i32) -> String {
        let gid = self
            .group_id(&self.resource_name(Kind::SecurityGroup))
            .await;
        let rules = self
            .ec2
            .describe_security_group_rules()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-id")
                    .values(gid)
                    .build(),
            )
            .send()
            .await
            .expect("rules");
        rules
            .security_group_rules()
            .iter()
            .find(|r| r.is_egress() == Some(false) && r.from_port() == Some(port))
            .and_then(|r| r.security_group_rule_id())
            .expect("rule on port")
            .to_string()
    }

    fn set_enabled(&mut self, enabled: bool) {
        self.desired.stack.enabled = enabled;
        for r in &mut self.desired.resources {
            if r.id.kind.is_runtime() {
                r.ensure = if enabled {
                    Ensure::Present
                } else {
                    Ensure::Absent
                };
            }
        }
    }
}

fn has(plan: &Plan, kind: Kind, action: Action) -> bool {
    plan.changes
        .iter()
        .any(|c| c.id.kind == kind && c.action == action)
}

#[tokio::test]
async fn from_empty_apply_creates_every_aws_resource_and_a_second_apply_writes_nothing() {
    let world = World::new().await;
    let plan = world.plan().await;
    for kind in [
        Kind::SecurityGroup,
        Kind::Bucket,
        Kind::Parameter,
        Kind::Instance,
        Kind::TargetGroup,
        Kind::ListenerRule,
    ] {
        assert!(
            has(&plan, kind, Action::Create),
            "no create of {kind}:\n{plan}"
        );
    }
    world.apply().await;
    let instance = world.instance().await;
    let meta = instance.metadata_options().expect("metadata options");
    assert_eq!(meta.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(meta.http_put_response_hop_limit(), Some(2));
    assert!(
        instance
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .is_some_and(|a| a.ends_with("/durable-code-local-observability"))
    );
    let tags: Vec<_> = instance.tags().iter().filter_map(|t| t.key()).collect();
    assert!(
        tags.contains(&"ManagedBy")
            && tags.contains(&"stackwarden:stack")
            && tags.contains(&"stackwarden:env"),
        "{tags:?}"
    );
    let health = world
        .elbv2
        .describe_target_health()
        .target_group_arn(world.target_group_arn().await)
        .send()
        .await
        .expect("health");
    let ids: Vec<_> = health
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target().and_then(|t| t.id()))
        .collect();
    assert_eq!(ids, vec![instance.instance_id().expect("id")]);

    world.stats.reset();
    let report = world.engine().apply(&world.desired).await;
    assert!(report.plan.changes.is_empty(), "{}", report.plan);
    assert_eq!(
        world.stats.total(CallKind::Write),
        0,
        "a second apply wrote:\n{}",
        world.stats
    );
}

#[tokio::test]
async fn a_steady_state_plan_makes_at_most_fifteen_calls_and_no_write() {
    let world = World::converged().await;
    world.stats.reset();
    // As the CLI does: the account first (for the bucket name), then the plan.
    let started = std::time::Instant::now();
    let provider = AwsProvider::new(&world.config, world.stats.clone());
    let account = provider.account_id().await.expect("account");
    assert_eq!(account, "123456789012");
    let engine = Engine::new(vec![Box::new(provider)]);
    let plan = engine.plan(&world.desired).await;
    assert!(!plan.has_changes(), "{plan}");
    // IAM reads have their own budget (tests/it/aws_fields.rs): 15 plus those.
    let reads =
        world.stats.total(CallKind::Read) - world.stats.service_total("iam", CallKind::Read);
    let writes = world.stats.total(CallKind::Write);
    // Reported for the benchmark record, never asserted (timing depends on the machine).
    eprintln!(
        "steady-state plan in {:?}:\n{}",
        started.elapsed(),
        world.stats
    );
    assert_eq!(writes, 0, "{}", world.stats);
    // 15, plus EC2's DescribeVolumes and DescribeSubnets: the instance's root volume and subnet
    // are observed live (issue 15), not inferred from launch tags. Where to save them back is
    // the lead's call (the awsec2 report). Plus SSM's ListTagsForResource: a parameter's tags
    // removed by hand are drift (issue 21). Plus S3's GetBucketPolicy and
    // GetBucketOwnershipControls: the bucket's access (issue 21).
    assert!(reads <= 15 + 5, "{} reads:\n{}", reads, world.stats);
}

#[tokio::test]
async fn the_instance_reports_ssm_reachability_as_a_condition_only() {
    let world = World::converged().await;
    let plan = world.plan().await;
    let ready = plan
        .conditions
        .iter()
        .find(|c| c.id.kind == Kind::Instance && c.kind == "Ready")
        .expect("a Ready condition on the instance");
    // moto has no DescribeInstanceInformation: the answer is Unknown, not a failure.
    assert_eq!(ready.reason, "SsmUnavailable", "{ready:?}");
    assert!(!plan.has_changes());
}

#[tokio::test]
async fn drift_revoked_ingress_rule_is_restored() {
    let world = World::converged().await;
    revoke_pyroscope_rule(&world).await;
    world
        .assert_repaired("+ ingress[tcp/4040 sg:durable-code-local-ecs-tasks-sg]")
        .await;
}

#[tokio::test]
async fn drift_extra_open_ingress_rule_is_revoked() {
    let world = World::converged().await;
    let gid = world
        .group_id(&world.resource_name(Kind::SecurityGroup))
        .await;
    open_ssh_to_the_world(&world.ec2, &gid).await;
    let plan = world.assert_repaired("- ingress[tcp/22 0.0.0.0/0]").await;
    assert!(
        plan.violations.iter().any(|v| v.rule == "no-open-ingress"),
        "{plan}"
    );
}

#[tokio::test]
async fn drift_changed_rule_port_is_restored() {
    let world = World::converged().await;
    let gid = world
        .group_id(&world.resource_name(Kind::SecurityGroup))
        .await;
    let ecs = world.group_id("durable-code-local-ecs-tasks-sg").await;
    let rule = world.ingress_rule_id(4040).await;
    world
        .ec2
        .revoke_security_group_ingress()
        .group_id(&gid)
        .security_group_rule_ids(rule)
        .send()
        .await
        .expect("revoke");
    world
        .ec2
        .authorize_security_group_ingress()
        .group_id(&gid)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(4041)
                .to_port(4041)
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(ecs)
                        .description("Pyroscope profiles from ECS tasks")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("authorize");
    let plan = world
        .assert_repaired("- ingress[tcp/4041 sg:durable-code-local-ecs-tasks-sg]")
        .await;
    assert!(plan.to_string().contains("+ ingress[tcp/4040"), "{plan}");
}

#[tokio::test]
async fn drift_block_public_acls_off_is_restored() {
    let world = World::converged().await;
    world
        .s3
        .put_public_access_block()
        .bucket(world.resource_name(Kind::Bucket))
        .public_access_block_configuration(
            aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                .block_public_acls(false)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .expect("put pab");
    let plan = world
        .assert_repaired("publicAccessBlock.blockPublicAcls: false → true")
        .await;
    assert!(
        plan.violations
            .iter()
            .any(|v| v.rule == "bucket-public-access-block")
    );
}

#[tokio::test]
async fn drift_deleted_lifecycle_configuration_is_restored() {
    let world = World::converged().await;
    world
        .s3
        .delete_bucket_lifecycle()
        .bucket(world.resource_name(Kind::Bucket))
        .send()
        .await
        .expect("delete lifecycle");
    world.assert_repaired("lifecycle: (none) →").await;
}

#[tokio::test]
async fn drift_changed_retention_days_is_restored() {
    let world = World::converged().await;
    let rules = ["mimir/", "loki/", "tempo/", "pyroscope/"]
        .iter()
        .map(|p| {
            aws_sdk_s3::types::LifecycleRule::builder()
                .id(format!("expire-{}", p.trim_end_matches('/')))
                .filter(
                    aws_sdk_s3::types::LifecycleRuleFilter::builder()
                        .prefix(*p)
                        .build(),
                )
                .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
                .expiration(
                    aws_sdk_s3::types::LifecycleExpiration::builder()
                        .days(30)
                        .build(),
                )
                .build()
                .expect("rule")
        })
        .collect();
    world
        .s3
        .put_bucket_lifecycle_configuration()
        .bucket(world.resource_name(Kind::Bucket))
        .lifecycle_configuration(
            aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .expect("conf"),
        )
        .send()
        .await
        .expect("put lifecycle");
    world.assert_repaired("loki/:30d").await;
}

#[tokio::test]
async fn drift_removed_encryption_is_restored() {
    let world = World::converged().await;
    world
        .s3
        .delete_bucket_encryption()
        .bucket(world.resource_name(Kind::Bucket))
        .send()
        .await
        .expect("delete encryption");
    world.assert_repaired("encryption: none → AES256").await;
}

async fn set_metadata(world: &World, tokens: &str, hops: i32) {
    let id = world
        .instance()
        .await
        .instance_id()
        .expect("id")
        .to_string();
    world
        .ec2
        .modify_instance_metadata_options()
        .instance_id(id)
        .http_tokens(tokens.into())
        .http_put_response_hop_limit(hops)
        .http_endpoint("enabled".into())
        .instance_metadata_tags("enabled".into())
        .send()
        .await
        .expect("modify metadata");
}

#[tokio::test]
async fn drift_optional_http_tokens_is_repaired_in_place() {
    let world = World::converged().await;
    let before = world.instance().await.instance_id().map(str::to_string);
    set_metadata(&world, "optional", 2).await;
    let plan = world
        .assert_repaired("metadataOptions.httpTokens: optional → required")
        .await;
    assert!(
        plan.violations.iter().any(|v| v.rule == "imdsv2-required"),
        "{plan}"
    );
    assert!(has(&plan, Kind::Instance, Action::Update));
    assert_eq!(
        world.instance().await.instance_id().map(str::to_string),
        before,
        "the instance was replaced"
    );
}

#[tokio::test]
async fn drift_hop_limit_one_is_repaired_in_place() {
    let world = World::converged().await;
    set_metadata(&world, "required", 1).await;
    world
        .assert_repaired("metadataOptions.httpPutResponseHopLimit: 1 → 2")
        .await;
    let meta = world
        .instance()
        .await
        .metadata_options()
        .cloned()
        .expect("meta");
    assert_eq!(meta.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(
        meta.instance_metadata_tags().map(|t| t.as_str()),
        Some("enabled")
    );
}

#[tokio::test]
async fn drift_disassociated_instance_profile_is_reassociated() {
    let world = World::converged().await;
    let id = world
        .instance()
        .await
        .instance_id()
        .expect("id")
        .to_string();
    let assoc = world
        .ec2
        .describe_iam_instance_profile_associations()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-id")
                .values(&id)
                .build(),
        )
        .send()
        .await
        .expect("associations");
    let assoc_id = assoc.iam_instance_profile_associations()[0]
        .association_id()
        .expect("id")
        .to_string();
    world
        .ec2
        .disassociate_iam_instance_profile()
        .association_id(assoc_id)
        .send()
        .await
        .expect("disassociate");
    world
        .assert_repaired("+ instanceProfile: durable-code-local-observability")
        .await;
    assert_eq!(world.instance().await.instance_id(), Some(id.as_str()));
}

#[tokio::test]
async fn drift_terminated_instance_is_recreated_and_registered() {
    let world = World::converged().await;
    let old = world
        .instance()
        .await
        .instance_id()
        .expect("id")
        .to_string();
    world
        .ec2
        .terminate_instances()
        .instance_ids(&old)
        .send()
        .await
        .expect("terminate");
    let plan = world.assert_repaired("the instance was terminated").await;
    assert!(has(&plan, Kind::Instance, Action::Create));
    let new = world
        .instance()
        .await
        .instance_id()
        .expect("id")
        .to_string();
    assert_ne!(new, old);
    let health = world
        .elbv2
        .describe_target_health()
        .target_group_arn(world.target_group_arn().await)
        .send()
        .await
        .expect("health");
    let ids: Vec<_> = health
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target().and_then(|t| t.id()))
        .collect();
    assert_eq!(ids, vec![new.as_str()]);
}

#[tokio::test]
async fn drift_deregistered_target_is_registered() {
    let world = World::converged().await;
    let id = world
        .instance()
        .await
        .instance_id()
        .expect("id")
        .to_string();
    world
        .elbv2
        .deregister_targets()
        .target_group_arn(world.target_group_arn().await)
        .targets(
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                .id(&id)
                .port(12347)
                .build(),
        )
        .send()
        .await
        .expect("deregister");
    world
        .assert_repaired("+ targets[observability:12347]")
        .await;
}

#[tokio::test]
async fn drift_changed_listener_rule_path_is_restored() {
    let world = World::converged().await;
    let rule = world.listener_rule().await;
    world
        .elbv2
        .modify_rule()
        .rule_arn(rule.rule_arn().expect("arn"))
        .conditions(
            aws_sdk_elasticloadbalancingv2::types::RuleCondition::builder()
                .field("path-pattern")
                .path_pattern_config(
                    aws_sdk_elasticloadbalancingv2::types::PathPatternConditionConfig::builder()
                        .values("/grafana/*")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("modify rule");
    world
        .assert_repaired("listener:80.pathPatterns: /grafana/* → /collect,/collect/*")
        .await;
}

#[tokio::test]
async fn drift_deleted_listener_rule_is_recreated() {
    let world = World::converged().await;
    let rule = world.listener_rule().await;
    world
        .elbv2
        .delete_rule()
        .rule_arn(rule.rule_arn().expect("arn"))
        .send()
        .await
        .expect("delete rule");
    world.assert_repaired("+ listener:80").await;
}

#[tokio::test]
async fn drift_overwritten_parameter_is_restored_without_showing_the_value() {
    let world = World::converged().await;
    let name = world.resource_name(Kind::Parameter);
    world
        .ssm
        .put_parameter()
        .name(&name)
        .value("admin")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("overwrite");
    let plan = world.assert_repaired("~ value: value differs").await;
    let json = serde_json::to_string(&plan).expect("json");
    for text in [plan.to_string(), json] {
        assert!(
            !text.contains(PASSWORD) && !text.contains("admin\""),
            "{text}"
        );
    }
    let live = world
        .ssm
        .get_parameter()
        .name(&name)
        .with_decryption(true)
        .send()
        .await
        .expect("get");
    assert_eq!(live.parameter().and_then(|p| p.value()), Some(PASSWORD));
}

#[tokio::test]
async fn drift_parameter_tags_removed_by_hand_are_put_back_without_rewriting_the_value() {
    let world = World::converged().await;
    let name = world.resource_name(Kind::Parameter);
    let tags = world
        .ssm
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(&name)
        .send()
        .await
        .expect("list tags");
    let keys: Vec<String> = tags
        .tag_list()
        .iter()
        .map(|t| t.key().to_string())
        .filter(|k| k == "ManagedBy" || k.starts_with("stackwarden:"))
        .collect();
    assert!(keys.len() >= 2, "{keys:?}");
    world
        .ssm
        .remove_tags_from_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(&name)
        .set_tag_keys(Some(keys.clone()))
        .send()
        .await
        .expect("remove tags");
    let versions = |w: &World| {
        let ssm = w.ssm.clone();
        let name = name.clone();
        async move {
            ssm.get_parameter()
                .name(&name)
                .send()
                .await
                .expect("get")
                .parameter()
                .map(|p| p.version())
        }
    };
    let before = versions(&world).await;
    let plan = world.assert_repaired("+ tags.ManagedBy: stackwarden").await;
    assert!(!plan.to_string().contains("value differs"), "{plan}");
    // Tagged again through the API, and the value was not written again.
    let tags = world
        .ssm
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(&name)
        .send()
        .await
        .expect("list tags");
    for k in &keys {
        assert!(tags.tag_list().iter().any(|t| t.key() == k), "{k} is back");
    }
    assert_eq!(versions(&world).await, before);
}

#[tokio::test]
async fn an_unset_secret_leaves_an_existing_parameter_alone_and_says_so() {
    let mut world = World::converged().await;
    for r in &mut world.desired.resources {
        if let Spec::Parameter(p) = &mut r.spec {
            p.value_from.file = None;
            p.value_from.env = Some("STACKWARDEN_TEST_VARIABLE_THAT_IS_NEVER_SET".into());
        }
    }
    let plan = world.plan().await;
    assert!(!plan.has_changes(), "{plan}");
    let c = plan
        .conditions
        .iter()
        .find(|c| c.id.kind == Kind::Parameter)
        .expect("a condition");
    assert_eq!(c.reason, "ValueUnverified");
    assert!(
        c.message
            .contains("STACKWARDEN_TEST_VARIABLE_THAT_IS_NEVER_SET"),
        "{c:?}"
    );
}

#[tokio::test]
async fn creating_a_parameter_without_its_secret_fails_naming_the_variable() {
    let mut world = World::new().await;
    for r in &mut world.desired.resources {
        if let Spec::Parameter(p) = &mut r.spec {
            p.value_from.file = None;
            p.value_from.env = Some("STACKWARDEN_TEST_VARIABLE_THAT_IS_NEVER_SET".into());
        }
    }
    let report = world.engine().apply(&world.desired).await;
    let failed: Vec<_> = report.failures().collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let error = failed[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("Parameter/")
            && error.contains("STACKWARDEN_TEST_VARIABLE_THAT_IS_NEVER_SET"),
        "{error}"
    );
}

#[tokio::test]
async fn disabling_removes_the_runtime_and_keeps_the_base_and_enabling_restores_it_with_the_data() {
    let mut world = World::converged().await;
    let bucket = world.resource_name(Kind::Bucket);
    world
        .s3
        .put_object()
        .bucket(&bucket)
        .key("mimir/blocks/01")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"samples"))
        .send()
        .await
        .expect("put object");

    world.set_enabled(false);
    let plan = world.plan().await;
    for kind in [Kind::Instance, Kind::TargetGroup, Kind::ListenerRule] {
        assert!(
            has(&plan, kind, Action::Delete),
            "no delete of {kind}:\n{plan}"
        );
    }
    for kind in [Kind::Bucket, Kind::SecurityGroup, Kind::Parameter] {
        assert!(
            !plan.changes.iter().any(|c| c.id.kind == kind),
            "{kind} touched:\n{plan}"
        );
    }
    world.apply().await;
    let after = world.plan().await;
    assert!(!after.has_changes(), "{after}");
    let groups = world
        .elbv2
        .describe_target_groups()
        .send()
        .await
        .expect("target groups");
    assert!(groups.target_groups().is_empty(), "target group kept");
    world
        .group_id(&world.resource_name(Kind::SecurityGroup))
        .await;

    world.set_enabled(true);
    let plan = world.plan().await;
    for kind in [Kind::Instance, Kind::TargetGroup, Kind::ListenerRule] {
        assert!(
            has(&plan, kind, Action::Create),
            "no create of {kind}:\n{plan}"
        );
    }
    world.apply().await;
    assert!(!world.plan().await.has_changes());
    world.instance().await;
    let object = world
        .s3
        .get_object()
        .bucket(&bucket)
        .key("mimir/blocks/01")
        .send()
        .await
        .expect("the object survived");
    let body = object.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], b"samples");
}

#[tokio::test]
async fn an_untagged_group_with_the_declared_name_is_adopted_not_duplicated() {
    let world = World::new().await;
    let vpcs = world
        .ec2
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values("durable-code-local-vpc")
                .build(),
        )
        .send()
        .await
        .expect("vpc");
    let vpc = vpcs.vpcs()[0].vpc_id().expect("id").to_string();
    let name = world.resource_name(Kind::SecurityGroup);
    // A matching group: only its tags are missing (a differing description is not adoptable
    // as is: it plans a replacement, see aws_ec2.rs).
    let description = world
        .desired
        .security_groups()
        .map(|(_, s)| s.description.clone())
        .next()
        .expect("a declared group");
    let created = world
        .ec2
        .create_security_group()
        .group_name(&name)
        .description(description)
        .vpc_id(vpc)
        .send()
        .await
        .expect("create group");
    let plan = world.plan().await;
    let adopt = plan
        .changes
        .iter()
        .find(|c| c.id.kind == Kind::SecurityGroup)
        .expect("a change to the group");
    assert_eq!(adopt.action, Action::Adopt, "{plan}");
    world.apply().await;
    assert!(!world.plan().await.has_changes());
    assert_eq!(world.group_id(&name).await, created.group_id().expect("id"));
    let groups = world
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(&name)
                .build(),
        )
        .send()
        .await
        .expect("groups");
    assert_eq!(groups.security_groups().len(), 1, "duplicated");
    let tags: Vec<_> = groups.security_groups()[0]
        .tags()
        .iter()
        .filter_map(|t| t.key())
        .collect();
    assert!(tags.contains(&"ManagedBy"), "{tags:?}");
}

#[tokio::test]
async fn changed_user_data_replaces_the_instance_and_says_why() {
    let mut world = World::converged().await;
    let old = world
        .instance()
        .await
        .instance_id()
        .expect("id")
        .to_string();
    for r in &mut world.desired.resources {
        if let Spec::Instance(i) = &mut r.spec {
            // The shipped Instance renders its user data from `bootstrap`; a person's own
            // script in its place is a change of user data like any other.
            i.bootstrap = None;
            i.user_data = Some("#!/bin/bash\necho changed\n".into());
        }
    }
    let plan = world
        .assert_repaired("-/+ replace Instance/observability (user data changed)")
        .await;
    assert!(has(&plan, Kind::Instance, Action::Replace));
    let new = world
        .instance()
        .await
        .instance_id()
        .expect("id")
        .to_string();
    assert_ne!(new, old);
}

#[tokio::test]
async fn with_an_https_listener_the_faro_rule_is_on_both_listeners() {
    let world = World::seeded(&["--https-listener"]).await;
    world.apply().await;
    let plan = world.plan().await;
    assert!(!plan.has_changes(), "pending after one apply:\n{plan}");
    let lbs = world
        .elbv2
        .describe_load_balancers()
        .names("durable-code-local-alb")
        .send()
        .await
        .expect("describe load balancers");
    let lb_arn = lbs.load_balancers()[0]
        .load_balancer_arn()
        .expect("arn")
        .to_string();
    let listeners = world
        .elbv2
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .expect("describe listeners");
    let mut ports_with_rule = Vec::new();
    for l in listeners.listeners() {
        let rules = world
            .elbv2
            .describe_rules()
            .listener_arn(l.listener_arn().expect("listener arn"))
            .send()
            .await
            .expect("describe rules");
        if rules.rules().iter().any(|r| r.priority() == Some("91")) {
            ports_with_rule.push(l.port().unwrap_or_default());
        }
    }
    ports_with_rule.sort();
    assert_eq!(ports_with_rule, vec![80, 443]);
}

#[tokio::test]
async fn changed_target_group_port_replaces_the_group_and_recreates_its_rule() {
    let mut world = World::converged().await;
    let old_arn = world.target_group_arn().await;
    for r in &mut world.desired.resources {
        if let Spec::TargetGroup(tg) = &mut r.spec {
            tg.port = 12348;
        }
    }
    let plan = world
        .assert_repaired("-/+ replace TargetGroup/faro (protocol and port cannot change in place")
        .await;
    assert!(has(&plan, Kind::TargetGroup, Action::Replace));
    assert!(has(&plan, Kind::ListenerRule, Action::Create));
    let new_arn = world.target_group_arn().await;
    assert_ne!(new_arn, old_arn);
    let rule = world.listener_rule().await;
    let forwards: Vec<&str> = rule
        .actions()
        .iter()
        .filter_map(|a| a.target_group_arn())
        .collect();
    assert_eq!(forwards, vec![new_arn.as_str()]);
}

/// Revokes the Pyroscope ingress rule by hand: drift on the security group.
async fn revoke_pyroscope_rule(world: &World) {
    let gid = world
        .group_id(&world.resource_name(Kind::SecurityGroup))
        .await;
    let rule = world.ingress_rule_id(4040).await;
    world
        .ec2
        .revoke_security_group_ingress()
        .group_id(&gid)
        .security_group_rule_ids(rule)
        .send()
        .await
        .expect("revoke");
}

#[tokio::test]
async fn observe_mode_reports_drift_and_never_writes() {
    let mut world = World::converged().await;
    revoke_pyroscope_rule(&world).await;
    world.desired.stack.mode = stackwarden::model::Mode::Observe;
    world.stats.reset();
    let report = world.apply().await;
    assert_eq!(world.stats.total(CallKind::Write), 0, "{}", world.stats);
    assert!(report.outcomes.is_empty(), "{:?}", report.outcomes);
    let drift = report
        .plan
        .changes
        .iter()
        .find(|c| c.id.kind == Kind::SecurityGroup)
        .expect("the drift is reported");
    assert_eq!(drift.mode, stackwarden::model::Mode::Observe);
    assert!(
        drift.to_string().contains("[observe: not applied]"),
        "{drift}"
    );
    // Still pending: observe mode never repairs.
    assert!(world.plan().await.has_changes());
}

#[tokio::test]
async fn observe_mode_on_one_resource_leaves_it_and_repairs_the_rest() {
    let mut world = World::converged().await;
    revoke_pyroscope_rule(&world).await;
    world
        .s3
        .delete_bucket_encryption()
        .bucket(world.resource_name(Kind::Bucket))
        .send()
        .await
        .expect("delete encryption");
    for r in &mut world.desired.resources {
        if r.id.kind == Kind::SecurityGroup {
            r.mode = stackwarden::model::Mode::Observe;
        }
    }
    world.apply().await;
    let plan = world.plan().await;
    let pending: Vec<String> = plan.changes.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(
        pending,
        vec!["SecurityGroup/observability".to_string()],
        "{plan}"
    );
}

// ---------------------------------------------------------------------------------------------
// The bucket's access: policy, ACL, ownership (asserted through the S3 API)

/// The bucket's policy as S3 returns it; `None` when it has none.
async fn bucket_policy(world: &World) -> Option<String> {
    match world
        .s3
        .get_bucket_policy()
        .bucket(world.resource_name(Kind::Bucket))
        .send()
        .await
    {
        Ok(p) => p.policy().map(str::to_string),
        Err(e) => {
            use aws_smithy_types::error::metadata::ProvideErrorMetadata;
            assert_eq!(e.code(), Some("NoSuchBucketPolicy"), "{e:?}");
            None
        }
    }
}

async fn put_bucket_policy(world: &World, statement: &str) {
    let bucket = world.resource_name(Kind::Bucket);
    let statement = statement.replace("BUCKET", &bucket);
    world
        .s3
        .put_bucket_policy()
        .bucket(&bucket)
        .policy(format!(
            r#"{{"Version":"2012-10-17","Statement":[{statement}]}}"#
        ))
        .send()
        .await
        .expect("put bucket policy");
}

#[tokio::test]
async fn drift_bucket_policy_granting_another_account_is_removed_naming_it() {
    let world = World::converged().await;
    assert_eq!(bucket_policy(&world).await, None);
    put_bucket_policy(
        &world,
        r#"{"Sid":"cross","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"s3:*","Resource":["arn:aws:s3:::BUCKET","arn:aws:s3:::BUCKET/*"]}"#,
    )
    .await;
    let plan = world
        .assert_repaired("- policy.Statement[cross]: Allow s3:* to arn:aws:iam::999999999999:root")
        .await;
    let v = plan
        .violations
        .iter()
        .find(|v| v.rule == "bucket-no-foreign-access")
        .unwrap_or_else(|| panic!("a violation:\n{plan}"));
    assert!(v.message.contains("999999999999"), "{v:?}");
    assert_eq!(bucket_policy(&world).await, None);
}

#[tokio::test]
async fn drift_bucket_policy_granting_everyone_read_is_removed_whatever_block_public_access_says() {
    let world = World::converged().await;
    put_bucket_policy(
        &world,
        r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::BUCKET/*"}"#,
    )
    .await;
    let plan = world
        .assert_repaired("- policy.Statement[0]: Allow s3:GetObject to *")
        .await;
    assert!(
        plan.violations
            .iter()
            .any(|v| v.rule == "bucket-no-foreign-access" && v.message.contains("lets * in")),
        "{plan}"
    );
    assert_eq!(bucket_policy(&world).await, None);
}

#[tokio::test]
async fn drift_public_read_acl_and_the_ownership_switched_to_allow_it_are_restored() {
    use aws_sdk_s3::types::{
        BucketCannedAcl, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
    };
    let world = World::converged().await;
    let bucket = world.resource_name(Kind::Bucket);
    // As real S3 requires: ACLs must be switched back on before one can be granted.
    world
        .s3
        .put_bucket_ownership_controls()
        .bucket(&bucket)
        .ownership_controls(
            OwnershipControls::builder()
                .rules(
                    OwnershipControlsRule::builder()
                        .object_ownership(ObjectOwnership::BucketOwnerPreferred)
                        .build()
                        .expect("rule"),
                )
                .build()
                .expect("controls"),
        )
        .send()
        .await
        .expect("ownership");
    world
        .s3
        .put_bucket_acl()
        .bucket(&bucket)
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .expect("public-read");
    let plan = world.assert_repaired("- acl: AllUsers READ").await;
    let text = plan.to_string();
    assert!(
        text.contains("objectOwnership: BucketOwnerPreferred → BucketOwnerEnforced"),
        "{text}"
    );
    let acl = world
        .s3
        .get_bucket_acl()
        .bucket(&bucket)
        .send()
        .await
        .expect("acl");
    let owner = acl.owner().and_then(|o| o.id()).map(str::to_string);
    assert!(
        acl.grants()
            .iter()
            .all(|g| g.grantee().and_then(|g| g.id()).map(str::to_string) == owner),
        "only the owner's grant: {:?}",
        acl.grants()
    );
    let ownership = world
        .s3
        .get_bucket_ownership_controls()
        .bucket(&bucket)
        .send()
        .await
        .expect("ownership");
    assert_eq!(
        ownership
            .ownership_controls()
            .and_then(|c| c.rules().first())
            .map(|r| r.object_ownership().as_str()),
        Some("BucketOwnerEnforced")
    );
}
