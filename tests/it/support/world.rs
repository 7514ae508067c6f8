//! The AWS world the provider tests act on: one seeded moto, the shipped `local` manifests
//! (the parameter's value read from a file), the provider and engine a CLI run would build,
//! and SDK clients for changing things by hand as a person would with the console. Each test
//! file adds what only it needs in its own `impl World` block.

use crate::support::causes::Applied;
use crate::support::moto::Moto;
use stackwarden::engine::{ApplyReport, Engine};
use stackwarden::model::{Desired, Kind, Spec};
use stackwarden::plan::Plan;
use stackwarden::provider::Stats;
use stackwarden::provider::aws::AwsProvider;
use std::path::Path;
use std::sync::Arc;

/// The Grafana admin password the tests put in the parameter's value file.
pub const PASSWORD: &str = "correct-horse-battery-staple";
/// The stack's name in the shipped manifests.
pub const STACK: &str = "observability";

/// SDK clients for one AWS endpoint, for counting and changing things outside stackwarden.
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub iam: aws_sdk_iam::Client,
}

impl Clients {
    pub fn new(config: &aws_config::SdkConfig) -> Clients {
        // moto serves buckets by path; virtual-host names would not resolve on loopback.
        let s3_conf = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build();
        Clients {
            ec2: aws_sdk_ec2::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            ssm: aws_sdk_ssm::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
        }
    }
}

/// The id of the security group named `name`.
pub async fn group_id(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let out = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(name)
                .build(),
        )
        .send()
        .await
        .expect("describe groups");
    out.security_groups()[0].group_id().expect("id").to_string()
}

/// What a person does by hand that the stack's policy forbids: opens SSH (tcp/22) to the
/// whole internet on group `gid`.
pub async fn open_ssh_to_the_world(ec2: &aws_sdk_ec2::Client, gid: &str) {
    ec2.authorize_security_group_ingress()
        .group_id(gid)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .expect("authorize ingress");
}

/// The shipped manifests of `env` as a run against `config` sees them: the account filled
/// in, the parameter's value read from a file written under `secret_dir`.
pub async fn desired_of(
    env: &str,
    config: &aws_config::SdkConfig,
    stats: &Arc<Stats>,
    secret_dir: &Path,
) -> Desired {
    let mut desired = stackwarden::manifest::load(Path::new("manifests"), Some(env))
        .unwrap_or_else(|e| panic!("the shipped manifests load for {env}: {e:?}"))
        .desired;
    assert_eq!(desired.stack_name, STACK);
    let account = AwsProvider::new(config, stats.clone())
        .account_id()
        .await
        .expect("account id");
    stackwarden::manifest::fill_runtime(&mut desired, &account);
    let secret_file = secret_dir.join("admin-password");
    std::fs::write(&secret_file, format!("{PASSWORD}\n")).expect("secret file");
    for r in &mut desired.resources {
        if let Spec::Parameter(p) = &mut r.spec {
            p.value_from.env = None;
            p.value_from.file = Some(secret_file.display().to_string());
        }
    }
    desired
}

/// One seeded moto, the shipped local manifests, SDK clients for making changes by hand.
pub struct World {
    /// The spec of each resource at the last apply, for the causes plans must give.
    pub applied: Applied,
    pub moto: Moto,
    _secret_dir: tempfile::TempDir,
    /// What the engine signs with.
    pub config: aws_config::SdkConfig,
    /// The calls every provider of this world made.
    pub stats: Arc<Stats>,
    pub desired: Desired,
    pub ec2: aws_sdk_ec2::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub iam: aws_sdk_iam::Client,
}

impl World {
    pub async fn new() -> World {
        World::seeded(&[]).await
    }

    /// A world whose pre-existing infrastructure is seeded with extra seed-world flags.
    pub async fn seeded(extra: &[&str]) -> World {
        World::of_env("local", extra).await
    }

    /// A world of environment `env`: its pre-existing infrastructure seeded (with extra
    /// seed-world flags), the shipped manifests loaded for it.
    pub async fn of_env(env: &str, extra: &[&str]) -> World {
        let mut flags = vec!["--env", env];
        flags.extend_from_slice(extra);
        let moto = Moto::start(&flags).await;
        let config = moto.sdk_config().await;
        let stats = Arc::new(Stats::default());
        // The value comes from a file: tests must not set process environment variables.
        let secret_dir = tempfile::tempdir().expect("temp dir");
        let desired = desired_of(env, &config, &stats, secret_dir.path()).await;
        let Clients {
            ec2,
            elbv2,
            s3,
            ssm,
            iam,
        } = Clients::new(&config);
        World {
            applied: Applied::default(),
            ec2,
            elbv2,
            s3,
            ssm,
            iam,
            moto,
            _secret_dir: secret_dir,
            config,
            stats,
            desired,
        }
    }

    /// Applies from empty and checks that nothing is left to do.
    pub async fn converged() -> World {
        let world = World::new().await;
        world.apply().await;
        let plan = world.plan().await;
        assert!(
            !plan.has_changes(),
            "pending after the first apply:\n{plan}"
        );
        world
    }

    /// A fresh provider, as one CLI invocation has; its calls count in `stats`.
    pub fn provider(&self) -> AwsProvider {
        AwsProvider::new(&self.config, self.stats.clone())
    }

    pub fn engine(&self) -> Engine {
        Engine::new(vec![Box::new(self.provider())])
    }

    /// A plan that read everything.
    pub async fn plan(&self) -> Plan {
        let plan = self.engine().plan(&self.desired).await;
        assert!(plan.errors().is_empty(), "plan errors: {:?}", plan.errors());
        plan
    }

    /// An apply in which every step succeeded and the stack converged.
    pub async fn apply(&self) -> ApplyReport {
        let report = self.engine().apply(&self.desired).await;
        let failures: Vec<_> = report.failures().collect();
        assert!(failures.is_empty(), "apply failed: {failures:#?}");
        assert!(
            report.converged(),
            "not converged: {:?}",
            report.plan.errors()
        );
        self.applied.record(&self.desired);
        report
    }

    /// The change shows in a plan (with `expect` in its text), one apply repairs it, and the
    /// next plan is empty.
    pub async fn assert_repaired(&self, expect: &str) -> Plan {
        let before = self.plan().await;
        self.applied.assert_causes(&before, &self.desired);
        let text = before.to_string();
        assert!(before.has_changes(), "the change is not seen:\n{text}");
        assert!(
            text.contains(expect),
            "the plan does not name `{expect}`:\n{text}"
        );
        self.apply().await;
        let after = self.plan().await;
        assert!(
            !after.has_changes(),
            "still pending after one apply:\n{after}"
        );
        before
    }

    /// The AWS name of the declared resource of `kind` (its id's name where it has none).
    pub fn resource_name(&self, kind: Kind) -> String {
        let r = self
            .desired
            .resources
            .iter()
            .find(|r| r.id.kind == kind)
            .expect("declared");
        match &r.spec {
            Spec::SecurityGroup(s) => s.name.clone(),
            Spec::Bucket(s) => s.name.clone(),
            Spec::Parameter(s) => s.name.clone(),
            Spec::Instance(s) => s.name.clone(),
            Spec::TargetGroup(s) => s.name.clone(),
            _ => r.id.name.clone(),
        }
    }

    /// The id of the security group named `name`.
    pub async fn group_id(&self, name: &str) -> String {
        group_id(&self.ec2, name).await
    }

    pub async fn target_group_arn(&self) -> String {
        let out = self
            .elbv2
            .describe_target_groups()
            .names(self.resource_name(Kind::TargetGroup))
            .send()
            .await
            .expect("describe target groups");
        out.target_groups()[0]
            .target_group_arn()
            .expect("arn")
            .to_string()
    }

    /// The ARN of the seeded ALB's HTTP listener.
    pub async fn http_listener(&self) -> String {
        let lb = self
            .elbv2
            .describe_load_balancers()
            .names("durable-code-local-alb")
            .send()
            .await
            .expect("alb");
        let lb_arn = lb.load_balancers()[0].load_balancer_arn().expect("arn");
        let listeners = self
            .elbv2
            .describe_listeners()
            .load_balancer_arn(lb_arn)
            .send()
            .await
            .expect("listeners");
        listeners
            .listeners()
            .iter()
            .find(|l| l.port() == Some(80))
            .and_then(|l| l.listener_arn())
            .expect("port 80")
            .to_string()
    }
}
