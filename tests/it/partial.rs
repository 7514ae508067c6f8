//! One resource that cannot be read holds up nothing else: it is Unknown with its error and
//! class, and the rest of the stack is planned and repaired. Access is refused by moto's own
//! IAM enforcement (a Deny policy on one bucket), not by a stand-in.

use crate::support::cli::{Cli, text};
use crate::support::moto::Moto;
use crate::support::world::open_ssh_to_the_world;
use aws_sdk_ec2::config::Credentials;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

/// An access key of a new IAM user with this inline policy.
async fn user_with_policy(moto: &Moto, user: &str, policy: serde_json::Value) -> (String, String) {
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
    iam.create_user().user_name(user).send().await.unwrap();
    iam.put_user_policy()
        .user_name(user)
        .policy_name("test")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    (key.access_key_id, key.secret_access_key)
}

/// From now on moto checks every request's credentials against IAM.
fn enforce_iam(moto: &Moto) {
    let addr = moto.endpoint.trim_start_matches("http://");
    let body = "0";
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "reset-auth: {answer}");
}

fn stackwarden(moto: &Moto, key: &(String, String), args: &[&str]) -> Output {
    Cli::new(args)
        .args(["--env", "local", "--scope", "aws"])
        .moto(moto)
        .credentials(key)
        .env("STACKWARDEN_GRAFANA_ADMIN_PASSWORD", "partial-test-secret")
        .output()
}

#[tokio::test]
async fn a_bucket_that_refuses_reads_is_unknown_and_the_rest_is_still_repaired() {
    let moto = Moto::start(&[]).await;
    let testing = ("testing".to_string(), "testing".to_string());
    let first = stackwarden(&moto, &testing, &["apply"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));

    let config = moto.sdk_config().await;
    let bucket = aws_sdk_s3::Client::new(&config)
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets
        .unwrap_or_default()
        .into_iter()
        .filter_map(|b| b.name)
        .find(|n| n.contains("durable-code"))
        .expect("the stack's bucket");
    let admin = user_with_policy(
        &moto,
        "admin",
        serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    .await;
    let restricted = user_with_policy(
        &moto,
        "restricted",
        serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            // The bucket's own settings, not its objects: the lease object stays usable.
            {"Effect": "Deny", "Action": "s3:*", "Resource": format!("arn:aws:s3:::{bucket}")}]}),
    )
    .await;
    enforce_iam(&moto);

    // A person opens SSH to the world on the stack's group.
    let admin_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(&admin.0, &admin.1, None, None, "test"))
        .endpoint_url(&moto.endpoint)
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&admin_config);
    let groups = ec2.describe_security_groups().send().await.unwrap();
    let gid = groups
        .security_groups()
        .iter()
        .find(|g| g.group_name() == Some("durable-code-local-observability-sg"))
        .and_then(|g| g.group_id())
        .expect("the stack's group")
        .to_string();
    open_ssh_to_the_world(&ec2, &gid).await;

    let plan = stackwarden(&moto, &restricted, &["plan"]);
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{out}");
    assert!(
        out.contains("? Bucket/data not observed (permission-denied)")
            && out.contains("AccessDenied")
            && out.contains("permission denied: the credentials in use lack s3:"),
        "the bucket is named Unknown with its class, the action to grant and AWS's error:\n{out}"
    );
    assert!(
        out.contains("- ingress[tcp/22 0.0.0.0/0]"),
        "the rest is still planned:\n{out}"
    );
    assert!(
        !out.contains("create Bucket/data"),
        "a bucket that could not be read is never planned as missing:\n{out}"
    );

    let apply = stackwarden(&moto, &restricted, &["apply"]);
    let out = text(&apply);
    assert_eq!(apply.status.code(), Some(1), "{out}");
    assert!(out.contains("Apply incomplete"), "{out}");

    // Read with full access: the group was repaired, nothing else is pending.
    let after = stackwarden(&moto, &admin, &["plan"]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
}
