//! EC2 hardening against a real moto server: never a duplicate instance (also with two applies
//! at once), ownership is absolute, every hand-made change is seen live, and changes keep the
//! host's data where EC2 allows it. Counts come from the AWS API, never from stackwarden's word.

use crate::support::world::{STACK, World};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use stackwarden::model::{Kind, Spec};
use stackwarden::plan::{Action, Plan};
use stackwarden::provider::{OpenGate, Provider};

/// The instance's Name tag in the local environment.
const INSTANCE: &str = "durable-code-local-observability";
/// The managed security group's name in the local environment.
const GROUP: &str = "durable-code-local-observability-sg";

/// What only these tests read and change.
impl World {
    fn instance_spec(&mut self) -> &mut stackwarden::model::InstanceSpec {
        self.desired
            .resources
            .iter_mut()
            .find_map(|r| match &mut r.spec {
                Spec::Instance(i) => Some(i),
                _ => None,
            })
            .expect("a declared instance")
    }

    /// Instances carrying the stack's tags and the instance's Name, alive (pending or running),
    /// as EC2 lists them.
    async fn live_instances(&self) -> Vec<aws_sdk_ec2::types::Instance> {
        let out = self
            .ec2
            .describe_instances()
            .filters(Filter::builder().name("tag:Name").values(INSTANCE).build())
            .filters(
                Filter::builder()
                    .name("tag:stackwarden:stack")
                    .values(STACK)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .expect("describe instances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect()
    }

    /// The one live instance.
    async fn live_instance(&self) -> aws_sdk_ec2::types::Instance {
        let all = self.live_instances().await;
        assert_eq!(all.len(), 1, "exactly one live instance: {all:#?}");
        all[0].clone()
    }

    async fn instance_id(&self) -> String {
        self.live_instance()
            .await
            .instance_id()
            .expect("id")
            .to_string()
    }

    async fn root_volume(&self) -> aws_sdk_ec2::types::Volume {
        let id = self.instance_id().await;
        let out = self
            .ec2
            .describe_volumes()
            .filters(
                Filter::builder()
                    .name("attachment.instance-id")
                    .values(id)
                    .build(),
            )
            .send()
            .await
            .expect("describe volumes");
        assert_eq!(out.volumes().len(), 1, "{:#?}", out.volumes());
        out.volumes()[0].clone()
    }

    async fn group(&self, name: &str) -> Option<aws_sdk_ec2::types::SecurityGroup> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(name).build())
            .send()
            .await
            .expect("describe groups");
        assert!(out.security_groups().len() <= 1, "duplicated group");
        out.security_groups().first().cloned()
    }

    async fn vpc_id(&self) -> String {
        let out = self
            .ec2
            .describe_vpcs()
            .filters(
                Filter::builder()
                    .name("tag:Name")
                    .values("durable-code-local-vpc")
                    .build(),
            )
            .send()
            .await
            .expect("vpc");
        out.vpcs()[0].vpc_id().expect("id").to_string()
    }

    async fn subnet_id(&self, tier: &str) -> String {
        let out = self
            .ec2
            .describe_subnets()
            .filters(Filter::builder().name("tag:Tier").values(tier).build())
            .send()
            .await
            .expect("subnets");
        let mut ids: Vec<String> = out
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .collect();
        ids.sort();
        ids.first().cloned().expect("a subnet of the tier")
    }

    /// Launches an instance by hand, carrying `tags`, in the private subnet.
    async fn launch_by_hand(&self, tags: &[(&str, &str)]) -> String {
        let image = self
            .live_instance()
            .await
            .image_id()
            .expect("ami")
            .to_string();
        let out = self
            .ec2
            .run_instances()
            .image_id(image)
            .instance_type("t3.medium".into())
            .min_count(1)
            .max_count(1)
            .subnet_id(self.subnet_id("private").await)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(
                        tags.iter()
                            .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                            .collect(),
                    ))
                    .build(),
            )
            .send()
            .await
            .expect("run instances");
        out.instances()[0].instance_id().expect("id").to_string()
    }
}

fn change(plan: &Plan, kind: Kind, action: Action) -> Option<&stackwarden::plan::Change> {
    plan.changes
        .iter()
        .find(|c| c.id.kind == kind && c.action == action)
}

/// Our stack's tags on an instance, as a second launch of it would carry them.
const OUR_TAGS: [(&str, &str); 4] = [
    ("Name", INSTANCE),
    ("ManagedBy", "stackwarden"),
    ("stackwarden:stack", STACK),
    ("stackwarden:env", "local"),
];

// ---------------------------------------------------------------------------------------------
// Never a duplicate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applies_at_once_after_a_termination_leave_exactly_one_instance() {
    let world = World::converged().await;
    let old = world.instance_id().await;
    world
        .ec2
        .terminate_instances()
        .instance_ids(&old)
        .send()
        .await
        .expect("terminate");
    // Both runs observe the terminated instance before either launches: each plans a launch.
    let (a, b) = (world.provider(), world.provider());
    let (seen_a, seen_b) = tokio::join!(a.observe(&world.desired), b.observe(&world.desired));
    let (seen_a, seen_b) = (seen_a.expect("observe a"), seen_b.expect("observe b"));
    let (plan_a, plan_b) = (
        a.diff(&world.desired, &seen_a),
        b.diff(&world.desired, &seen_b),
    );
    for plan in [&plan_a, &plan_b] {
        assert!(
            plan.steps
                .iter()
                .any(|s| s.change.id.kind == Kind::Instance && s.change.action == Action::Create),
            "{:?}",
            plan.steps
        );
    }
    let (done_a, done_b) = tokio::join!(
        a.apply(&world.desired, &seen_a, plan_a.steps, &OpenGate),
        b.apply(&world.desired, &seen_b, plan_b.steps, &OpenGate)
    );
    for outcome in done_a.iter().chain(&done_b) {
        assert!(outcome.error.is_none(), "{outcome:?}");
    }
    let live = world.live_instances().await;
    assert_eq!(
        live.len(),
        1,
        "instances carrying the stack's tags: {:?}",
        live.iter().map(|i| i.instance_id()).collect::<Vec<_>>()
    );
    // The race leaves nothing a later run would miss: one apply, then nothing pending.
    world.apply().await;
    let plan = world.plan().await;
    assert!(!plan.has_changes(), "{plan}");
    assert_eq!(world.live_instances().await.len(), 1);
}

#[tokio::test]
async fn a_duplicate_instance_made_by_hand_plans_the_delete_of_the_newest() {
    let world = World::converged().await;
    let original = world.instance_id().await;
    let extra = world.launch_by_hand(&OUR_TAGS).await;
    let plan = world.plan().await;
    let delete = change(&plan, Kind::Instance, Action::Delete)
        .unwrap_or_else(|| panic!("no delete of the duplicate:\n{plan}"));
    let reason = delete.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&extra) && reason.contains(&original),
        "{reason}"
    );
    world.assert_repaired(&extra).await;
    assert_eq!(world.instance_id().await, original);
}

#[tokio::test]
async fn of_two_instances_the_registered_one_is_kept_even_when_newer() {
    let world = World::converged().await;
    let original = world.instance_id().await;
    let newer = world.launch_by_hand(&OUR_TAGS).await;
    // Traffic goes to the newer one: it is the one to keep.
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&world.config);
    let tg = elbv2
        .describe_target_groups()
        .names("durable-code-local-faro-tg")
        .send()
        .await
        .expect("target group");
    let arn = tg.target_groups()[0]
        .target_group_arn()
        .expect("arn")
        .to_string();
    let target = |id: &str| {
        aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
            .id(id)
            .port(12347)
            .build()
    };
    elbv2
        .deregister_targets()
        .target_group_arn(&arn)
        .targets(target(&original))
        .send()
        .await
        .expect("deregister");
    elbv2
        .register_targets()
        .target_group_arn(&arn)
        .targets(target(&newer))
        .send()
        .await
        .expect("register");
    world.assert_repaired(&original).await;
    assert_eq!(world.instance_id().await, newer);
}

// ---------------------------------------------------------------------------------------------
// Ownership is absolute

#[tokio::test]
async fn a_security_group_tagged_for_another_stack_is_an_error_naming_that_stack() {
    let world = World::new().await;
    let theirs = world
        .ec2
        .create_security_group()
        .group_name(GROUP)
        .description("the other stack's group")
        .vpc_id(world.vpc_id().await)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(Tag::builder().key("ManagedBy").value("stackwarden").build())
                .tags(
                    Tag::builder()
                        .key("stackwarden:stack")
                        .value("billing")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("create group");
    let plan = world.engine().plan(&world.desired).await;
    let errors = plan.errors().join("\n");
    assert!(
        errors.contains("SecurityGroup/observability") && errors.contains("`billing`"),
        "{plan}"
    );
    let report = world.engine().apply(&world.desired).await;
    assert!(!report.converged());
    let group = world.group(GROUP).await.expect("their group");
    assert_eq!(group.group_id(), theirs.group_id());
    assert!(group.ip_permissions().is_empty(), "their group was changed");
    let stack = group
        .tags()
        .iter()
        .find(|t| t.key() == Some("stackwarden:stack"))
        .and_then(|t| t.value());
    assert_eq!(stack, Some("billing"));
    assert!(world.live_instances().await.is_empty(), "half-applied");
}

#[tokio::test]
async fn an_instance_tagged_for_another_stack_is_an_error_naming_that_stack() {
    let world = World::converged().await;
    let ours = world.instance_id().await;
    world
        .ec2
        .terminate_instances()
        .instance_ids(&ours)
        .send()
        .await
        .expect("terminate");
    let theirs = world
        .launch_by_hand_after_termination(&[
            ("Name", INSTANCE),
            ("ManagedBy", "stackwarden"),
            ("stackwarden:stack", "billing"),
        ])
        .await;
    let plan = world.engine().plan(&world.desired).await;
    let errors = plan.errors().join("\n");
    assert!(
        errors.contains("Instance/observability")
            && errors.contains(&theirs)
            && errors.contains("`billing`"),
        "{plan}"
    );
    let report = world.engine().apply(&world.desired).await;
    assert!(!report.converged());
    let out = world
        .ec2
        .describe_instances()
        .instance_ids(&theirs)
        .send()
        .await
        .expect("describe");
    let theirs_now = out.reservations()[0].instances()[0].clone();
    let stack = theirs_now
        .tags()
        .iter()
        .find(|t| t.key() == Some("stackwarden:stack"))
        .and_then(|t| t.value());
    assert_eq!(stack, Some("billing"), "their instance was adopted");
    assert!(world.live_instances().await.is_empty(), "ours was launched");
}

impl World {
    /// Like [`World::launch_by_hand`] when no instance of ours is alive to copy the AMI from.
    async fn launch_by_hand_after_termination(&self, tags: &[(&str, &str)]) -> String {
        let out = self
            .ec2
            .run_instances()
            .image_id("ami-0ed094fb1304fd857")
            .instance_type("t3.medium".into())
            .min_count(1)
            .max_count(1)
            .subnet_id(self.subnet_id("private").await)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(
                        tags.iter()
                            .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                            .collect(),
                    ))
                    .build(),
            )
            .send()
            .await
            .expect("run instances");
        out.instances()[0].instance_id().expect("id").to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Every hand-made change is seen

#[tokio::test]
async fn drift_root_volume_type_changed_by_hand_is_seen_live_and_modified_in_place() {
    let world = World::converged().await;
    let id = world.instance_id().await;
    let volume = world.root_volume().await;
    world
        .ec2
        .modify_volume()
        .volume_id(volume.volume_id().expect("id"))
        .volume_type("gp2".into())
        .send()
        .await
        .expect("modify volume");
    world.assert_repaired("rootVolume.type: gp2 → gp3").await;
    assert_eq!(world.instance_id().await, id, "the instance was replaced");
    let after = world.root_volume().await;
    assert_eq!(after.volume_type().map(|t| t.as_str()), Some("gp3"));
}

#[tokio::test]
async fn a_bigger_root_volume_is_grown_in_place() {
    let mut world = World::converged().await;
    let id = world.instance_id().await;
    world.instance_spec().root_volume.size_gib = 40;
    world.assert_repaired("rootVolume.sizeGib: 30 → 40").await;
    assert_eq!(world.instance_id().await, id, "the instance was replaced");
    assert_eq!(world.root_volume().await.size(), Some(40));
}

#[tokio::test]
async fn a_subnet_the_lookup_no_longer_selects_replaces_the_instance_and_says_why() {
    let mut world = World::converged().await;
    let old = world.instance_id().await;
    let public = world.subnet_id("public").await;
    for r in &mut world.desired.resources {
        if let Spec::Lookup(l) = &mut r.spec
            && r.id.name == "private-subnets"
        {
            l.tags.insert("Tier".into(), "public".into());
        }
    }
    let plan = world
        .assert_repaired("-/+ replace Instance/observability (subnet ")
        .await;
    assert!(
        change(&plan, Kind::Instance, Action::Replace).is_some(),
        "{plan}"
    );
    let new = world.live_instance().await;
    assert_ne!(new.instance_id(), Some(old.as_str()));
    assert_eq!(new.subnet_id(), Some(public.as_str()));
}

#[tokio::test]
async fn a_changed_security_group_description_plans_a_visible_replacement() {
    let mut world = World::converged().await;
    let old = world.group(GROUP).await.expect("group");
    for r in &mut world.desired.resources {
        if let Spec::SecurityGroup(sg) = &mut r.spec {
            sg.description = "Observability host, v2".into();
        }
    }
    world
        .assert_repaired(
            "-/+ replace SecurityGroup/observability (a group's description cannot change in place",
        )
        .await;
    let new = world.group(GROUP).await.expect("group");
    assert_ne!(new.group_id(), old.group_id());
    assert_eq!(new.description(), Some("Observability host, v2"));
    let instance = world.live_instance().await;
    let groups: Vec<_> = instance
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, vec![new.group_id().expect("id")]);
    assert_eq!(
        new.ip_permissions().len(),
        old.ip_permissions().len(),
        "rules"
    );
}

#[tokio::test]
async fn drift_extra_tag_on_the_instance_is_removed() {
    let world = World::converged().await;
    world
        .ec2
        .create_tags()
        .resources(world.instance_id().await)
        .tags(Tag::builder().key("Owner").value("someone").build())
        .send()
        .await
        .expect("tag");
    world.assert_repaired("- tags.Owner: someone").await;
    let tags: Vec<_> = world
        .live_instance()
        .await
        .tags()
        .iter()
        .filter_map(|t| t.key().map(str::to_string))
        .collect();
    assert!(!tags.contains(&"Owner".to_string()), "{tags:?}");
}

#[tokio::test]
async fn drift_extra_egress_rule_is_revoked() {
    let world = World::converged().await;
    let gid = world
        .group(GROUP)
        .await
        .and_then(|g| g.group_id().map(str::to_string))
        .expect("group");
    world
        .ec2
        .authorize_security_group_egress()
        .group_id(&gid)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(25)
                .to_port(25)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("10.9.0.0/16")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("authorize egress");
    world.assert_repaired("- egress[tcp/25 10.9.0.0/16]").await;
}

// ---------------------------------------------------------------------------------------------
// Changes that keep data

#[tokio::test]
async fn a_new_instance_type_is_stop_modify_start_and_keeps_the_instance() {
    let mut world = World::converged().await;
    let id = world.instance_id().await;
    world.instance_spec().instance_type = "t3.large".into();
    let plan = world
        .assert_repaired("instanceType: t3.medium → t3.large")
        .await;
    let update = change(&plan, Kind::Instance, Action::Update)
        .unwrap_or_else(|| panic!("an in-place update:\n{plan}"));
    assert!(
        update
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("stop → modify → start")),
        "{update}"
    );
    assert!(change(&plan, Kind::Instance, Action::Replace).is_none());
    let instance = world.live_instance().await;
    assert_eq!(instance.instance_id(), Some(id.as_str()));
    assert_eq!(
        instance.instance_type().map(|t| t.as_str()),
        Some("t3.large")
    );
    assert_eq!(
        instance.state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applies_at_once_from_empty_create_one_security_group_and_both_succeed() {
    let world = World::new().await;
    let (a, b) = (world.provider(), world.provider());
    let (seen_a, seen_b) = tokio::join!(a.observe(&world.desired), b.observe(&world.desired));
    let (seen_a, seen_b) = (seen_a.expect("observe a"), seen_b.expect("observe b"));
    let groups_only = |mut plan: stackwarden::provider::ProviderPlan<_>| {
        plan.steps
            .retain(|s| s.change.id.kind == Kind::SecurityGroup);
        assert_eq!(plan.steps.len(), 1, "{:?}", plan.steps);
        assert_eq!(plan.steps[0].change.action, Action::Create);
        plan.steps
    };
    let (steps_a, steps_b) = (
        groups_only(a.diff(&world.desired, &seen_a)),
        groups_only(b.diff(&world.desired, &seen_b)),
    );
    let (done_a, done_b) = tokio::join!(
        a.apply(&world.desired, &seen_a, steps_a, &OpenGate),
        b.apply(&world.desired, &seen_b, steps_b, &OpenGate)
    );
    for outcome in done_a.iter().chain(&done_b) {
        assert!(outcome.error.is_none(), "{outcome:?}");
    }
    world.group(GROUP).await.expect("the group");
    world.apply().await;
    let plan = world.plan().await;
    assert!(!plan.has_changes(), "{plan}");
}

#[tokio::test]
async fn drift_changed_egress_rule_description_is_restored() {
    let world = World::converged().await;
    let gid = world
        .group(GROUP)
        .await
        .and_then(|g| g.group_id().map(str::to_string))
        .expect("group");
    world
        .ec2
        .update_security_group_rule_descriptions_egress()
        .group_id(&gid)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .description("changed by hand")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("update description");
    world
        .assert_repaired("~ egress[all 0.0.0.0/0]: \"changed by hand\" →")
        .await;
}

#[tokio::test]
async fn drift_instance_moved_to_another_security_group_is_moved_back() {
    let world = World::converged().await;
    let ecs = world
        .group("durable-code-local-ecs-tasks-sg")
        .await
        .and_then(|g| g.group_id().map(str::to_string))
        .expect("ecs group");
    let ours = world
        .group(GROUP)
        .await
        .and_then(|g| g.group_id().map(str::to_string))
        .expect("our group");
    world
        .ec2
        .modify_instance_attribute()
        .instance_id(world.instance_id().await)
        .groups(&ours)
        .groups(&ecs)
        .send()
        .await
        .expect("modify groups");
    world
        .assert_repaired("securityGroups: durable-code-local-ecs-tasks-sg,durable-code-local-observability-sg → durable-code-local-observability-sg")
        .await;
    let groups: Vec<String> = world
        .live_instance()
        .await
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect();
    assert_eq!(groups, vec![ours]);
}

#[tokio::test]
async fn drift_root_volume_kept_after_termination_is_set_back_to_delete() {
    let world = World::converged().await;
    let instance = world.live_instance().await;
    let device = instance
        .root_device_name()
        .expect("root device")
        .to_string();
    world
        .ec2
        .modify_instance_attribute()
        .instance_id(instance.instance_id().expect("id"))
        .block_device_mappings(
            aws_sdk_ec2::types::InstanceBlockDeviceMappingSpecification::builder()
                .device_name(&device)
                .ebs(
                    aws_sdk_ec2::types::EbsInstanceBlockDeviceSpecification::builder()
                        .delete_on_termination(false)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("modify attribute");
    world
        .assert_repaired("rootVolume.deleteOnTermination: false → true")
        .await;
    let after = world.live_instance().await;
    let root = after
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(device.as_str()))
        .and_then(|m| m.ebs())
        .expect("root mapping");
    assert_eq!(root.delete_on_termination(), Some(true));
}

#[tokio::test]
async fn drift_renamed_instance_is_renamed_back_not_launched_again() {
    let world = World::converged().await;
    let id = world.instance_id().await;
    world
        .ec2
        .create_tags()
        .resources(&id)
        .tags(Tag::builder().key("Name").value("renamed-by-hand").build())
        .send()
        .await
        .expect("rename");
    let plan = world
        .assert_repaired(&format!("~ tags.Name: renamed-by-hand → {INSTANCE}"))
        .await;
    assert!(
        change(&plan, Kind::Instance, Action::Create).is_none(),
        "{plan}"
    );
    assert_eq!(world.instance_id().await, id);
}

#[tokio::test]
async fn drift_removed_name_tag_is_restored_not_launched_again() {
    let world = World::converged().await;
    let id = world.instance_id().await;
    world
        .ec2
        .delete_tags()
        .resources(&id)
        .tags(Tag::builder().key("Name").build())
        .send()
        .await
        .expect("untag");
    world
        .assert_repaired(&format!("+ tags.Name: {INSTANCE}"))
        .await;
    assert_eq!(world.instance_id().await, id);
}

/// Every live instance in the account, tagged or not, as EC2 lists them.
async fn every_live_instance(world: &World) -> Vec<String> {
    let out = world
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopped")
                .build(),
        )
        .send()
        .await
        .expect("describe instances");
    let mut ids: Vec<String> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// Deletes every tag of a resource, as `aws ec2 delete-tags` naming each key would.
async fn delete_every_tag(world: &World, id: &str) {
    let tags = world
        .ec2
        .describe_tags()
        .filters(Filter::builder().name("resource-id").values(id).build())
        .send()
        .await
        .expect("describe tags");
    let keys: Vec<Tag> = tags
        .tags()
        .iter()
        .filter_map(|t| t.key())
        .map(|k| Tag::builder().key(k).build())
        .collect();
    assert!(!keys.is_empty(), "{id} has tags to delete");
    world
        .ec2
        .delete_tags()
        .resources(id)
        .set_tags(Some(keys))
        .send()
        .await
        .expect("delete tags");
}

#[tokio::test]
async fn every_tag_deleted_from_the_instance_adopts_it_never_launches_a_second() {
    let world = World::converged().await;
    let id = world.instance_id().await;
    assert_eq!(every_live_instance(&world).await, std::slice::from_ref(&id));
    delete_every_tag(&world, &id).await;
    let plan = world
        .assert_repaired("~ adopt Instance/observability")
        .await;
    let text = plan.to_string();
    assert!(
        text.contains(&format!("{id} (security groups {GROUP}")),
        "{text}"
    );
    assert!(text.contains("never launched twice"), "{text}");
    assert!(
        change(&plan, Kind::Instance, Action::Create).is_none(),
        "{plan}"
    );
    // Exactly one instance, the original, wearing its tags again.
    assert_eq!(every_live_instance(&world).await, std::slice::from_ref(&id));
    assert_eq!(world.instance_id().await, id);
}

#[tokio::test]
async fn untagged_lookalikes_that_disagree_stop_the_plan_and_nothing_is_created() {
    let world = World::converged().await;
    let id = world.instance_id().await;
    let group = world
        .group(GROUP)
        .await
        .and_then(|g| g.group_id().map(str::to_string))
        .expect("the stack's group");
    delete_every_tag(&world, &id).await;
    // A second untagged instance in the stack's security group, without its profile.
    let image = world
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("describe")
        .reservations()[0]
        .instances()[0]
        .image_id()
        .expect("ami")
        .to_string();
    let other = world
        .ec2
        .run_instances()
        .image_id(image)
        .instance_type("t3.medium".into())
        .min_count(1)
        .max_count(1)
        .subnet_id(world.subnet_id("private").await)
        .security_group_ids(&group)
        .send()
        .await
        .expect("run instances")
        .instances()[0]
        .instance_id()
        .expect("id")
        .to_string();
    let plan = world.engine().plan(&world.desired).await;
    let blocked = plan
        .blocks()
        .find(|b| b.id.kind == Kind::Instance)
        .unwrap_or_else(|| panic!("the instance is blocked:\n{plan}"));
    assert_eq!(blocked.reason, stackwarden::plan::BlockReason::Ambiguous);
    assert!(
        blocked.message.contains(&id) && blocked.message.contains(&other),
        "{blocked:?}"
    );
    assert!(
        change(&plan, Kind::Instance, Action::Create).is_none(),
        "{plan}"
    );
    // apply stops too, and still no third instance exists.
    let report = world.engine().apply(&world.desired).await;
    assert!(!report.converged(), "apply must not claim convergence");
    let mut both = vec![id, other];
    both.sort();
    assert_eq!(every_live_instance(&world).await, both);
}

/// moto keeps a group pair's description through UpdateSecurityGroupRuleDescriptionsIngress
/// (a quirk: real EC2 changes it), so the hand-made change is made the other way EC2 allows:
/// the rule revoked and authorized again under another description.
#[tokio::test]
async fn drift_changed_ingress_rule_description_is_restored() {
    let world = World::converged().await;
    let group = world.group(GROUP).await.expect("group");
    let gid = group.group_id().expect("id").to_string();
    let perm = group
        .ip_permissions()
        .iter()
        .find(|p| !p.user_id_group_pairs().is_empty())
        .expect("an ingress rule from a group")
        .clone();
    let pair = perm.user_id_group_pairs()[0].clone();
    let only = |description: Option<&str>| {
        aws_sdk_ec2::types::IpPermission::builder()
            .set_ip_protocol(perm.ip_protocol().map(str::to_string))
            .set_from_port(perm.from_port())
            .set_to_port(perm.to_port())
            .user_id_group_pairs(
                aws_sdk_ec2::types::UserIdGroupPair::builder()
                    .set_group_id(pair.group_id().map(str::to_string))
                    .set_description(description.map(str::to_string))
                    .build(),
            )
            .build()
    };
    world
        .ec2
        .revoke_security_group_ingress()
        .group_id(&gid)
        .ip_permissions(only(pair.description()))
        .send()
        .await
        .expect("revoke");
    world
        .ec2
        .authorize_security_group_ingress()
        .group_id(&gid)
        .ip_permissions(only(Some("changed by hand")))
        .send()
        .await
        .expect("authorize");
    let plan = world.assert_repaired("\"changed by hand\" →").await;
    assert!(plan.to_string().contains("~ ingress["), "{plan}");
}
