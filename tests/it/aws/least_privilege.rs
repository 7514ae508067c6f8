//! The generated IAM policies are sufficient, proven against moto with IAM enforcement on: an
//! IAM user holding exactly the `ci` policy (as moto reads it: docs/iam.md) applies the stack
//! from empty, plans it steady, repairs a drift of each AWS kind, turns the flag off and on,
//! and takes, renews and releases the lease. The world is seeded and the users created with
//! the default credentials first; then enforcement is switched on, and drift is made by an
//! admin user.

use super::{World, revoke_pyroscope_rule, set_metadata};
use crate::support::world::Clients;
use stackwarden::model::Kind;
use stackwarden::provider::aws::permissions::{Principal, Scope, policy};
use stackwarden::reconcile::lease::{Holding, Lease, LeaseScope};
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

/// What moto calls some S3 actions (it authorizes a few bucket sub-resources under another
/// name: docs/quirks.md). The real name stays in the policy; moto's is added beside it.
fn moto_names(action: &str) -> &'static [&'static str] {
    match action {
        "s3:GetEncryptionConfiguration"
        | "s3:GetBucketPublicAccessBlock"
        | "s3:GetBucketOwnershipControls" => &["s3:ListBucket"],
        "s3:PutBucketPublicAccessBlock" | "s3:PutBucketOwnershipControls" => &["s3:CreateBucket"],
        "s3:PutEncryptionConfiguration" => &["s3:CreateBucket", "s3:DeleteBucket"],
        _ => &[],
    }
}

/// IAM calls that name no role: moto matches them against `*` too (it resolves a resource only
/// from a `RoleName`).
const IAM_WITHOUT_ROLE_NAME: [&str; 3] = [
    "iam:GetInstanceProfile",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
];

/// The document as moto can check it: moto matches the Resource of EC2, ELBv2 and SSM
/// requests (and IAM requests naming no role) as `*`, so those statements' resources are widened; actions and conditions (which
/// moto does not evaluate) are kept.
pub(super) fn as_moto_reads_it(doc: &serde_json::Value) -> serde_json::Value {
    let mut doc = doc.clone();
    for s in doc["Statement"].as_array_mut().expect("statements") {
        let actions: Vec<String> = s["Action"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| a.as_str().expect("action").to_string())
            .collect();
        let unscoped_in_moto = actions.iter().any(|a| {
            a.starts_with("ec2:")
                || a.starts_with("elasticloadbalancing:")
                || a.starts_with("ssm:")
                || IAM_WITHOUT_ROLE_NAME.contains(&a.as_str())
        });
        if unscoped_in_moto {
            s["Resource"] = serde_json::json!("*");
        }
        let mut all = actions.clone();
        for a in &actions {
            all.extend(moto_names(a).iter().map(|m| m.to_string()));
        }
        all.sort();
        all.dedup();
        s["Action"] = serde_json::json!(all);
    }
    doc
}

/// Moto checks a query-protocol request's signature over the form it parsed, encoded again
/// with `+` for a space, while the Rust SDK signed `%20`: any EC2 value holding a space then
/// fails with AuthFailure (docs/quirks.md). The proof's descriptions have none.
fn without_spaces(desired: &mut stackwarden::model::Desired) {
    for r in &mut desired.resources {
        if let stackwarden::model::Spec::SecurityGroup(g) = &mut r.spec {
            g.description = g.description.replace(' ', "_");
            for rule in &mut g.ingress {
                rule.description = rule.description.replace(' ', "_");
            }
            for rule in &mut g.egress {
                rule.description = rule.description.replace(' ', "_");
            }
        }
    }
}

/// Switches enforcement on: from now on every request is checked against its signer's
/// policies (moto's `reset-auth` with an initial no-auth count of 0).
fn enforce(endpoint: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to moto");
    let req = format!(
        "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\n0"
    );
    s.write_all(req.as_bytes()).expect("send reset-auth");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read reset-auth");
    assert!(answer.starts_with("HTTP/1.1 200"), "reset-auth: {answer}");
}

/// Creates an IAM user holding `doc` and returns an SDK config signing as that user.
async fn user(world: &World, name: &str, doc: &serde_json::Value) -> aws_config::SdkConfig {
    let iam = aws_sdk_iam::Client::new(&world.config);
    iam.create_user()
        .user_name(name)
        .send()
        .await
        .expect("create user");
    iam.put_user_policy()
        .user_name(name)
        .policy_name("stackwarden")
        .policy_document(doc.to_string())
        .send()
        .await
        .expect("put user policy");
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .expect("create access key");
    let key = key.access_key().expect("a key");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            key.access_key_id(),
            key.secret_access_key(),
            None,
            None,
            "test",
        ))
        .endpoint_url(world.endpoint())
        .load()
        .await
}

/// A seeded world where the engine signs as a user holding `principal`'s policy (as moto reads
/// it) and the drift clients as an admin; enforcement is on.
pub(super) async fn world_as(policy_of: impl Fn(&World) -> serde_json::Value) -> World {
    let mut world = World::new().await;
    let doc = policy_of(&world);
    let admin = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": "*", "Resource": "*" }]
    });
    let admin = user(&world, "admin", &admin).await;
    let engine = user(&world, "stackwarden", &as_moto_reads_it(&doc)).await;
    enforce(&world.endpoint());
    without_spaces(&mut world.desired);
    world.use_configs(engine, admin);
    world
}

/// The `ci` policy for the shipped local stack.
pub(super) fn ci_policy(world: &World) -> serde_json::Value {
    policy(
        Principal::Ci,
        &Scope::of(&world.desired, "123456789012").expect("the shipped layouts"),
    )
}

/// Whether the step's error says AWS denied a call.
pub(super) fn denied(error: &str) -> bool {
    error.contains("AccessDenied") || error.contains("not authorized") || error.contains("403")
}

/// One step of the proof: observe, a repair, the flag, the lease. `Err` names what failed.
pub(super) type Outcome = Result<(), String>;

/// What a plan could not observe, for people.
fn incomplete(plan: &stackwarden::plan::Plan) -> String {
    let mut what = plan.errors();
    what.extend(
        plan.unobserved
            .iter()
            .map(|u| format!("{} unobserved: {}", u.id, u.error)),
    );
    what.join("; ")
}

impl World {
    fn endpoint(&self) -> String {
        self.moto.endpoint.clone()
    }

    /// The engine signs with `engine` from now on; the drift clients with `admin`.
    fn use_configs(&mut self, engine: aws_config::SdkConfig, admin: aws_config::SdkConfig) {
        let Clients {
            ec2,
            elbv2,
            s3,
            ssm,
            ..
        } = Clients::new(&admin);
        (self.ec2, self.elbv2, self.s3, self.ssm) = (ec2, elbv2, s3, ssm);
        self.config = engine;
    }

    async fn try_plan(&self) -> Result<stackwarden::plan::Plan, String> {
        let plan = self.engine().plan(&self.desired).await;
        if plan.is_incomplete() {
            Err(incomplete(&plan))
        } else {
            Ok(plan)
        }
    }

    async fn try_apply(&self) -> Outcome {
        let report = self.engine().apply(&self.desired).await;
        let failures: Vec<String> = report
            .failures()
            .map(|o| {
                format!(
                    "{}: {}",
                    o.change.id,
                    o.error.as_deref().unwrap_or_default()
                )
            })
            .collect();
        if !failures.is_empty() {
            return Err(failures.join("; "));
        }
        if !report.converged() {
            return Err(incomplete(&report.plan));
        }
        Ok(())
    }

    /// A plan with nothing to do.
    pub(super) async fn steady(&self) -> Outcome {
        let plan = self.try_plan().await?;
        if plan.has_changes() {
            return Err(format!("changes pending:\n{plan}"));
        }
        Ok(())
    }

    /// The drift shows, one apply repairs it, the next plan is empty.
    async fn repairs(&self) -> Outcome {
        let plan = self.try_plan().await?;
        if !plan.has_changes() {
            return Err("the drift is not seen".into());
        }
        self.try_apply().await?;
        self.steady().await
    }

    /// Takes, renews and releases the stack's leases: the AWS writer's and the host's.
    async fn lease_cycle(&self) -> Outcome {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.config)
                .force_path_style(true)
                .build(),
        );
        for scope in [LeaseScope::Aws, LeaseScope::Host] {
            let lease = Lease::new(
                s3.clone(),
                self.resource_name(Kind::Bucket),
                &self.desired.stack_name,
                &self.desired.environment,
                scope,
                "proof@test:1".to_string(),
                Duration::from_secs(15),
            );
            for what in ["taken", "renewed"] {
                match lease.acquire(SystemTime::now()).await {
                    Ok(Holding::Held { .. }) => {}
                    Ok(other) => return Err(format!("{scope:?} lease not {what}: {other:?}")),
                    Err(e) => return Err(format!("{scope:?} lease not {what}: {e}")),
                }
            }
            lease
                .release()
                .await
                .map_err(|e| format!("{scope:?} lease not released: {e}"))?;
        }
        Ok(())
    }
}

/// The steps, in order, each with its name; the first failure stops the run.
pub(super) async fn run_steps(world: &mut World) -> Vec<(&'static str, Outcome)> {
    let mut done: Vec<(&'static str, Outcome)> = Vec::new();
    macro_rules! step {
        ($name:expr, $body:expr) => {{
            let outcome: Outcome = $body;
            let failed = outcome.is_err();
            done.push(($name, outcome));
            if failed {
                return done;
            }
        }};
    }
    step!("apply from empty", world.try_apply().await);
    step!("steady plan", world.steady().await);
    step!("repair SecurityGroup (revoked ingress rule)", {
        revoke_pyroscope_rule(world).await;
        world.repairs().await
    });
    step!("repair Instance (IMDSv2 optional)", {
        set_metadata(world, "optional", 2).await;
        world.repairs().await
    });
    step!("repair Bucket (encryption removed)", {
        world
            .s3
            .delete_bucket_encryption()
            .bucket(world.resource_name(Kind::Bucket))
            .send()
            .await
            .expect("delete encryption");
        world.repairs().await
    });
    step!("repair Parameter (value overwritten)", {
        world
            .ssm
            .put_parameter()
            .name(world.resource_name(Kind::Parameter))
            .value("admin-by-hand")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("overwrite");
        world.repairs().await
    });
    step!("repair TargetGroup (health check path)", {
        world
            .elbv2
            .modify_target_group()
            .target_group_arn(world.target_group_arn().await)
            .health_check_path("/by-hand")
            .send()
            .await
            .expect("modify target group");
        world.repairs().await
    });
    step!("repair ListenerRule (deleted)", {
        let rule = world.listener_rule().await;
        world
            .elbv2
            .delete_rule()
            .rule_arn(rule.rule_arn().expect("arn"))
            .send()
            .await
            .expect("delete rule");
        world.repairs().await
    });
    step!("flag off", {
        world.set_enabled(false);
        match world.try_apply().await {
            Ok(()) => world.steady().await,
            Err(e) => Err(e),
        }
    });
    step!("flag on", {
        world.set_enabled(true);
        match world.try_apply().await {
            Ok(()) => world.steady().await,
            Err(e) => Err(e),
        }
    });
    step!("lease taken, renewed, released", world.lease_cycle().await);
    done
}

#[tokio::test]
async fn the_ci_policy_is_sufficient_for_every_step_against_enforcing_iam() {
    let mut world = world_as(ci_policy).await;
    let done = run_steps(&mut world).await;
    for (name, outcome) in &done {
        eprintln!("{name}: {}", if outcome.is_ok() { "ok" } else { "FAILED" });
    }
    let failed: Vec<String> = done
        .iter()
        .filter_map(|(n, o)| o.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(done.len(), 11, "every step ran");
}

#[tokio::test]
async fn enforcement_is_on_an_empty_policy_is_denied() {
    let mut world = world_as(|_| {
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": ["sts:GetCallerIdentity"], "Resource": "*" }]
        })
    })
    .await;
    let done = run_steps(&mut world).await;
    let (name, outcome) = done.last().expect("a step ran");
    let error = outcome
        .as_ref()
        .expect_err("a user holding nothing cannot apply");
    assert_eq!(*name, "apply from empty");
    assert!(denied(error), "{error}");
}

/// The policy without one action (a statement left with none is removed).
fn without(doc: &serde_json::Value, action: &str) -> serde_json::Value {
    let mut doc = doc.clone();
    let statements = doc["Statement"].as_array_mut().expect("statements");
    for s in statements.iter_mut() {
        if let Some(list) = s["Action"].as_array_mut() {
            list.retain(|a| a != action);
        }
    }
    statements.retain(|s| s["Action"].as_array().is_some_and(|l| !l.is_empty()));
    doc
}

/// Actions of the ci policy whose loss no step here shows, each with why. The minimality
/// test fails when one of them turns out to break a step (take it off this list) and when
/// an action missing from it breaks none (the policy asks for something unused, or a step
/// is missing).
const NOT_SHOWN_HERE: &[(&str, &str)] = &[
    (
        "iam:PassRole",
        "moto does not check PassRole on RunInstances",
    ),
    (
        "s3:ListBucket",
        "moto answers NoSuchKey without it; it also stands for the bucket reads moto names ListBucket",
    ),
    (
        "s3:GetEncryptionConfiguration",
        "moto authorizes it as s3:ListBucket",
    ),
    (
        "s3:GetBucketPublicAccessBlock",
        "moto authorizes it as s3:ListBucket",
    ),
    (
        "s3:GetBucketOwnershipControls",
        "moto authorizes it as s3:ListBucket",
    ),
    (
        "s3:PutEncryptionConfiguration",
        "moto authorizes it as s3:CreateBucket",
    ),
    (
        "s3:PutBucketPublicAccessBlock",
        "moto authorizes it as s3:CreateBucket",
    ),
    (
        "s3:PutBucketOwnershipControls",
        "moto authorizes it as s3:CreateBucket",
    ),
    (
        "ssm:DescribeInstanceInformation",
        "a denied reachability check is a condition (Unknown), never a failed step",
    ),
    ("ec2:StopInstances", "no step changes the instance type"),
    ("ec2:StartInstances", "no step changes the instance type"),
    (
        "ec2:ModifyInstanceAttribute",
        "no step changes the instance type or moves it off a group",
    ),
    ("ec2:ModifyVolume", "no step grows the root volume"),
    (
        "ec2:AssociateIamInstanceProfile",
        "no step disassociates the instance profile",
    ),
    (
        "ec2:ReplaceIamInstanceProfileAssociation",
        "no step swaps the instance profile",
    ),
    (
        "ec2:DeleteSecurityGroup",
        "no step replaces the security group",
    ),
    ("ec2:DeleteTags", "no step adds a stale ownership tag"),
    (
        "ec2:AuthorizeSecurityGroupEgress",
        "no step revokes the egress rule",
    ),
    (
        "ec2:RevokeSecurityGroupEgress",
        "no step adds an egress rule",
    ),
    (
        "ec2:RevokeSecurityGroupIngress",
        "no step adds an ingress rule",
    ),
    (
        "elasticloadbalancing:ModifyRule",
        "no step changes the rule's path",
    ),
    (
        "elasticloadbalancing:RemoveTags",
        "no step adds a stale tag",
    ),
    (
        "elasticloadbalancing:ModifyTargetGroupAttributes",
        "no step changes the deregistration delay",
    ),
    (
        "ssm:AddTagsToResource",
        "no step removes the parameter's tags",
    ),
    ("s3:PutBucketAcl", "no step makes the bucket public-read"),
    ("s3:DeleteBucketPolicy", "no step puts a bucket policy"),
    (
        "s3:PutBucketPolicy",
        "stackwarden never writes a policy it did not find",
    ),
    ("s3:PutBucketVersioning", "no step enables versioning"),
    (
        "s3:CreateBucket",
        "moto's name for the bucket puts above, which keep it granted",
    ),
    (
        "ec2:CreateTags",
        "moto tags on create without checking it, and no step removes a tag",
    ),
    (
        "elasticloadbalancing:AddTags",
        "moto tags on create without checking it, and no step removes a tag",
    ),
    (
        "elasticloadbalancing:DeregisterTargets",
        "no step replaces the instance",
    ),
    (
        "ec2:DescribeImages",
        "read for the AMI's root device; no step here fails without it",
    ),
    (
        "iam:GetPolicy",
        "the seeded role's managed policy is read through ListPolicies and GetPolicyVersion",
    ),
    ("iam:GetRolePolicy", "the seeded role has no inline policy"),
    (
        "s3:GetBucketAcl",
        "no step here fails without it (the ACL is read only while ACLs are enabled)",
    ),
];

#[tokio::test]
async fn each_action_of_the_ci_policy_is_needed_by_a_step() {
    use futures_util::StreamExt;
    let all: Vec<&'static str> = stackwarden::provider::aws::permissions::actions(Principal::Ci)
        .into_keys()
        .collect();
    let to_drop: Vec<&'static str> = all
        .iter()
        .copied()
        .filter(|a| !NOT_SHOWN_HERE.iter().any(|(n, _)| n == a))
        .collect();
    // Three worlds at a time: each is a moto server and a stack applied from empty.
    let broken: Vec<(&str, Result<&str, String>)> = futures_util::stream::iter(to_drop)
        .map(|action| async move {
            let mut world = world_as(|w| without(&ci_policy(w), action)).await;
            let done = run_steps(&mut world).await;
            let outcome = match done.last() {
                Some((step, Err(e))) if denied(e) => Ok(*step),
                Some((step, Err(e))) => Err(format!("{step} failed, not denied: {e}")),
                _ => Err("every step passed without it".to_string()),
            };
            (action, outcome)
        })
        .buffer_unordered(3)
        .collect()
        .await;
    let mut broken = broken;
    broken.sort();
    for (action, outcome) in &broken {
        match outcome {
            Ok(step) => eprintln!("without {action}: `{step}` is denied"),
            Err(e) => eprintln!("without {action}: {e}"),
        }
    }
    let unused: Vec<String> = broken
        .iter()
        .filter_map(|(a, o)| o.as_ref().err().map(|e| format!("{a}: {e}")))
        .collect();
    assert!(
        unused.is_empty(),
        "actions no step needs (or whose loss is not an AccessDenied):\n{}",
        unused.join("\n")
    );
    for (action, _) in NOT_SHOWN_HERE {
        assert!(
            all.contains(action),
            "{action} is listed as not shown here, but the policy no longer holds it"
        );
    }
}

#[tokio::test]
async fn a_denied_repair_is_tried_once_names_the_action_and_the_rest_converges() {
    let world = world_as(|w| without(&ci_policy(w), "ec2:ModifyInstanceMetadataOptions")).await;
    world.try_apply().await.expect("apply from empty");
    set_metadata(&world, "optional", 2).await;
    revoke_pyroscope_rule(&world).await;
    world.stats.reset();
    let report = world.engine().apply(&world.desired).await;
    let attempts: u64 = world
        .stats
        .snapshot()
        .iter()
        .filter(|(service, op, _, _)| service == "ec2" && op == "ModifyInstanceMetadataOptions")
        .map(|(_, _, _, n)| n)
        .sum();
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    let denied = failures[0];
    assert_eq!(denied.change.id.kind, Kind::Instance);
    assert_eq!(
        denied.class,
        Some(stackwarden::plan::ErrorClass::PermissionDenied)
    );
    let error = denied.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("lack ec2:ModifyInstanceMetadataOptions")
            && error.contains("user/stackwarden"),
        "{error}"
    );
    // One attempt: the SDK does not retry it and apply does not try it again.
    assert_eq!(attempts, 1);
    assert!(!report.worth_retrying());
    // The security group's repair went through all the same.
    let plan = world.try_plan().await.expect("plan");
    assert!(
        plan.changes.iter().all(|c| c.id.kind == Kind::Instance),
        "only the denied repair is left:\n{plan}"
    );
}
