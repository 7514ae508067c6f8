//! A stack's identity is its name and its environment (issue 31, blocker B2): every
//! environment deploys the Stack `observability`, so staging and prod sharing one account must
//! never take each other's resources for their own, and a stack written before the
//! environment tag existed is adopted by adding it, nothing recreated. Real moto, real SDK.

use crate::support::world::{World, desired_of};
use stackwarden::model::{Desired, Spec, Tags};
use stackwarden::plan::{Action, Plan};
use std::collections::BTreeMap;

/// The tag naming the owning stack's environment.
const ENV_TAG: &str = "stackwarden:env";
/// The tag naming the owning stack.
const STACK_TAG: &str = "stackwarden:stack";

/// What each resource a stack wrote is, as AWS says: `kind name` → (its id, its tags).
type Identity = BTreeMap<String, (String, Tags)>;

fn tags_of<'a>(pairs: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>) -> Tags {
    pairs
        .filter_map(|(k, v)| Some((k?.to_string(), v.unwrap_or("").to_string())))
        .collect()
}

/// Reads, through the AWS API, the id and tags of every resource `desired` declares (by its
/// environment-specific name): what another environment's run must leave exactly as it was.
async fn identity(world: &World, desired: &Desired) -> Identity {
    let mut out = Identity::new();
    for r in &desired.resources {
        let (key, found) = match &r.spec {
            Spec::SecurityGroup(s) => {
                let g = world
                    .ec2
                    .describe_security_groups()
                    .filters(
                        aws_sdk_ec2::types::Filter::builder()
                            .name("group-name")
                            .values(&s.name)
                            .build(),
                    )
                    .send()
                    .await
                    .expect("describe groups");
                let found = g.security_groups().first().map(|g| {
                    (
                        g.group_id().unwrap_or("").to_string(),
                        tags_of(g.tags().iter().map(|t| (t.key(), t.value()))),
                    )
                });
                (format!("group {}", s.name), found)
            }
            Spec::Instance(s) => {
                let out = world
                    .ec2
                    .describe_instances()
                    .filters(
                        aws_sdk_ec2::types::Filter::builder()
                            .name("tag:Name")
                            .values(&s.name)
                            .build(),
                    )
                    .filters(
                        aws_sdk_ec2::types::Filter::builder()
                            .name("instance-state-name")
                            .values("pending")
                            .values("running")
                            .build(),
                    )
                    .send()
                    .await
                    .expect("describe instances");
                let live: Vec<_> = out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .collect();
                assert!(
                    live.len() <= 1,
                    "{} live instances named {}",
                    live.len(),
                    s.name
                );
                let found = live.first().map(|i| {
                    (
                        i.instance_id().unwrap_or("").to_string(),
                        tags_of(i.tags().iter().map(|t| (t.key(), t.value()))),
                    )
                });
                (format!("instance {}", s.name), found)
            }
            Spec::TargetGroup(s) => {
                let found = match world
                    .elbv2
                    .describe_target_groups()
                    .names(&s.name)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let arn = out.target_groups()[0]
                            .target_group_arn()
                            .expect("arn")
                            .to_string();
                        Some((arn.clone(), elb_tags(world, &arn).await))
                    }
                    Err(_) => None,
                };
                (format!("target group {}", s.name), found)
            }
            Spec::Bucket(s) => {
                let found = match world.s3.get_bucket_tagging().bucket(&s.name).send().await {
                    Ok(out) => Some((
                        s.name.clone(),
                        tags_of(
                            out.tag_set()
                                .iter()
                                .map(|t| (Some(t.key()), Some(t.value()))),
                        ),
                    )),
                    Err(_) => None,
                };
                (format!("bucket {}", s.name), found)
            }
            Spec::Parameter(s) => {
                let found = match world
                    .ssm
                    .list_tags_for_resource()
                    .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
                    .resource_id(&s.name)
                    .send()
                    .await
                {
                    Ok(out) => Some((
                        s.name.clone(),
                        tags_of(
                            out.tag_list()
                                .iter()
                                .map(|t| (Some(t.key()), Some(t.value()))),
                        ),
                    )),
                    Err(_) => None,
                };
                (format!("parameter {}", s.name), found)
            }
            _ => continue,
        };
        out.insert(
            key.clone(),
            found.unwrap_or_else(|| panic!("{key} is not in AWS")),
        );
    }
    for (arn, tags) in listener_rules(world, &desired.environment).await {
        out.insert(format!("listener rule {arn}"), (arn, tags));
    }
    out
}

async fn elb_tags(world: &World, arn: &str) -> Tags {
    let out = world
        .elbv2
        .describe_tags()
        .resource_arns(arn)
        .send()
        .await
        .expect("describe tags");
    tags_of(
        out.tag_descriptions()
            .iter()
            .flat_map(|d| d.tags())
            .map(|t| (t.key(), t.value())),
    )
}

/// The non-default rules on the HTTP listener of `env`'s ALB, with their tags.
async fn listener_rules(world: &World, env: &str) -> Vec<(String, Tags)> {
    let lb = world
        .elbv2
        .describe_load_balancers()
        .names(format!("durable-code-{env}-alb"))
        .send()
        .await
        .expect("the seeded alb");
    let lb_arn = lb.load_balancers()[0].load_balancer_arn().expect("arn");
    let listeners = world
        .elbv2
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .expect("listeners");
    let mut out = Vec::new();
    for l in listeners.listeners() {
        let rules = world
            .elbv2
            .describe_rules()
            .listener_arn(l.listener_arn().expect("arn"))
            .send()
            .await
            .expect("rules");
        for rule in rules
            .rules()
            .iter()
            .filter(|r| r.is_default() != Some(true))
        {
            let arn = rule.rule_arn().expect("arn").to_string();
            out.push((arn.clone(), elb_tags(world, &arn).await));
        }
    }
    out
}

/// Every resource of the identity carries the stack's tag and `env`'s.
fn assert_tagged_for(identity: &Identity, env: &str) {
    assert!(!identity.is_empty());
    for (what, (_, tags)) in identity {
        assert_eq!(
            tags.get(STACK_TAG).map(String::as_str),
            Some("observability"),
            "{what}: {tags:?}"
        );
        assert_eq!(
            tags.get(ENV_TAG).map(String::as_str),
            Some(env),
            "{what}: {tags:?}"
        );
    }
}

/// The ids of an identity (tags left out).
fn ids(identity: &Identity) -> BTreeMap<String, String> {
    identity
        .iter()
        .map(|(k, (id, _))| (k.clone(), id.clone()))
        .collect()
}

/// The world of staging, applied, with prod's pre-existing infrastructure seeded beside it
/// in the same account, and prod's desired state.
async fn staging_applied_beside_prods_base() -> (World, Desired, tempfile::TempDir) {
    let world = World::of_env("staging", &[]).await;
    world.moto.seed(&["--env", "prod"]).await;
    world.apply().await;
    let secret_dir = tempfile::tempdir().expect("temp dir");
    let prod = desired_of("prod", &world.config, &world.stats, secret_dir.path()).await;
    (world, prod, secret_dir)
}

async fn plan_of(world: &World, desired: &Desired) -> Plan {
    let plan = world.engine().plan(desired).await;
    assert!(plan.errors().is_empty(), "plan errors: {:?}", plan.errors());
    plan
}

#[tokio::test]
async fn a_prod_plan_in_an_account_holding_only_stagings_stack_deletes_and_replaces_nothing() {
    let (world, prod, _secrets) = staging_applied_beside_prods_base().await;
    let staging_before = identity(&world, &world.desired).await;

    let plan = plan_of(&world, &prod).await;
    // Prod has nothing yet: everything of it is created, nothing of staging's is taken.
    let not_created: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Create)
        .map(|c| format!("{} {}", c.action.verb(), c.id))
        .collect();
    assert!(
        not_created.is_empty(),
        "prod's plan touches what it did not create: {not_created:?}\n{plan}"
    );
    assert!(
        plan.changes
            .iter()
            .any(|c| c.id.kind == stackwarden::model::Kind::Instance),
        "prod's instance is not planned: staging's was taken for it\n{plan}"
    );
    assert_eq!(identity(&world, &world.desired).await, staging_before);
    assert_tagged_for(&staging_before, "staging");
}

#[tokio::test]
async fn staging_and_prod_in_one_account_each_converge_and_never_touch_the_other() {
    let (world, prod, _secrets) = staging_applied_beside_prods_base().await;
    let staging_before = identity(&world, &world.desired).await;

    let report = world.engine().apply(&prod).await;
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "prod's apply failed: {failures:#?}");
    assert!(report.converged(), "{:?}", report.plan.errors());

    for (env, desired) in [("staging", &world.desired), ("prod", &prod)] {
        let plan = plan_of(&world, desired).await;
        assert!(!plan.has_changes(), "{env} is not clean:\n{plan}");
    }
    // Staging's resources are the very ones it made, tagged as it tagged them.
    assert_eq!(identity(&world, &world.desired).await, staging_before);
    let prod_now = identity(&world, &prod).await;
    assert_tagged_for(&prod_now, "prod");
    // And prod made its own: no id of staging's stands for one of prod's.
    let staging_ids: Vec<String> = ids(&staging_before).into_values().collect();
    for (what, id) in ids(&prod_now) {
        assert!(
            !staging_ids.contains(&id),
            "prod's {what} is staging's {id}"
        );
    }
}

/// Takes the environment tag off every resource the stack wrote, as the stack looked before
/// the environment was part of its identity.
async fn remove_env_tags(world: &World, identity: &Identity) {
    for (what, (id, _)) in identity {
        let kind = what.split(' ').next().unwrap_or("");
        match kind {
            "group" | "instance" => {
                world
                    .ec2
                    .delete_tags()
                    .resources(id)
                    .tags(aws_sdk_ec2::types::Tag::builder().key(ENV_TAG).build())
                    .send()
                    .await
                    .expect("delete tags");
            }
            "target" | "listener" => {
                world
                    .elbv2
                    .remove_tags()
                    .resource_arns(id)
                    .tag_keys(ENV_TAG)
                    .send()
                    .await
                    .expect("remove tags");
            }
            "bucket" => {
                let (_, tags) = &identity[what];
                let kept: Vec<aws_sdk_s3::types::Tag> = tags
                    .iter()
                    .filter(|(k, _)| *k != ENV_TAG)
                    .map(|(k, v)| {
                        aws_sdk_s3::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                            .expect("tag")
                    })
                    .collect();
                world
                    .s3
                    .put_bucket_tagging()
                    .bucket(id)
                    .tagging(
                        aws_sdk_s3::types::Tagging::builder()
                            .set_tag_set(Some(kept))
                            .build()
                            .expect("tagging"),
                    )
                    .send()
                    .await
                    .expect("put bucket tagging");
            }
            "parameter" => {
                world
                    .ssm
                    .remove_tags_from_resource()
                    .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
                    .resource_id(id)
                    .tag_keys(ENV_TAG)
                    .send()
                    .await
                    .expect("remove tags");
            }
            other => panic!("no way to untag a {other}"),
        }
    }
}

#[tokio::test]
async fn a_stack_from_before_the_environment_tag_is_adopted_by_a_retag_and_keeps_its_ids() {
    let world = World::converged().await;
    let before = identity(&world, &world.desired).await;
    assert_tagged_for(&before, "local");
    remove_env_tags(&world, &before).await;
    for (what, (_, tags)) in identity(&world, &world.desired).await {
        assert!(!tags.contains_key(ENV_TAG), "{what} still tagged: {tags:?}");
    }

    let plan = plan_of(&world, &world.desired).await;
    assert!(plan.has_changes(), "the missing tag is not seen");
    for c in &plan.changes {
        assert_eq!(
            c.action,
            Action::Adopt,
            "{} {}\n{plan}",
            c.action.verb(),
            c.id
        );
        let paths: Vec<&str> = c.fields.iter().map(|f| f.path.as_str()).collect();
        assert!(
            paths
                .iter()
                .all(|p| p.ends_with(&format!("tags.{ENV_TAG}"))),
            "{} changes more than the tag: {paths:?}\n{plan}",
            c.id
        );
        let reason = c.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("before the environment was part of its identity"),
            "{}: {reason}",
            c.id
        );
    }
    // Every resource the stack wrote is re-tagged: none is left behind, none created.
    assert_eq!(
        plan.changes.len(),
        before.len(),
        "one adoption per resource:\n{plan}"
    );

    world.apply().await;
    let after = identity(&world, &world.desired).await;
    assert_tagged_for(&after, "local");
    assert_eq!(ids(&after), ids(&before), "a resource was recreated");
    let plan = plan_of(&world, &world.desired).await;
    assert!(!plan.has_changes(), "still pending:\n{plan}");
}

#[tokio::test]
async fn a_target_group_tagged_for_another_environment_is_an_error_and_never_changed() {
    let world = World::converged().await;
    let arn = world.target_group_arn().await;
    world
        .elbv2
        .add_tags()
        .resource_arns(&arn)
        .tags(
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key(ENV_TAG)
                .value("prod")
                .build(),
        )
        .send()
        .await
        .expect("add tags");
    let plan = world.engine().plan(&world.desired).await;
    let errors = plan.errors().join("\n");
    assert!(
        errors.contains("TargetGroup/") && errors.contains("environment `prod`"),
        "no error naming the other environment: {errors}\n{plan}"
    );
    world.stats.reset();
    let report = world.engine().apply(&world.desired).await;
    assert!(!report.converged(), "apply claims convergence");
    assert_eq!(
        world.stats.total(stackwarden::provider::CallKind::Write),
        0,
        "apply wrote:\n{}",
        world.stats
    );
    assert_eq!(
        elb_tags(&world, &arn)
            .await
            .get(ENV_TAG)
            .map(String::as_str),
        Some("prod")
    );
}
