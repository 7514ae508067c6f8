//! `plan --check-permissions` compares the observed instance role with `iam-policy --for host`.

use crate::support::cli::{Cli, text};
use crate::support::moto::Moto;
use std::process::Output;

fn stackwarden(moto: &Moto, args: &[&str]) -> Output {
    Cli::new(args)
        .args(["--env", "local"])
        .moto(moto)
        .env(
            "STACKWARDEN_GRAFANA_ADMIN_PASSWORD",
            "check-permissions-secret",
        )
        .output()
}

#[tokio::test]
async fn check_permissions_names_what_the_instance_role_lacks_until_it_holds_the_host_policy() {
    let moto = Moto::start(&[]).await;
    let role = "durable-code-local-observability";
    let before = stackwarden(&moto, &["plan", "--scope", "aws", "--check-permissions"]);
    let out = text(&before);
    assert!(
        out.contains(&format!("permissions: role {role} lacks"))
            && out.contains("ec2:DescribeInstances"),
        "{out}"
    );

    let policy = stackwarden(&moto, &["iam-policy", "--for", "host"]);
    assert_eq!(policy.status.code(), Some(0), "{}", text(&policy));
    let document = String::from_utf8(policy.stdout).expect("utf-8");
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
    iam.put_role_policy()
        .role_name(role)
        .policy_name("stackwarden-host")
        .policy_document(&document)
        .send()
        .await
        .expect("put role policy");

    let after = stackwarden(&moto, &["plan", "--scope", "aws", "--check-permissions"]);
    let out = text(&after);
    assert!(out.contains(&format!("permissions: role {role}")), "{out}");
    assert!(!out.contains("lacks"), "{out}");
}
