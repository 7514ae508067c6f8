//! The backends (Mimir, Loki, Tempo, Pyroscope) reach the bucket through the instance role:
//! the policy `iam-policy --for host` prints must let each use the prefix its shipped config
//! names — against moto enforcing IAM — and nothing of stackwarden's own keys; validation
//! refuses a config that would put a backend there.

use crate::support::cli::{Cli, text};
use crate::support::files::{copy_dir, repo};
use crate::support::moto::Moto;
use aws_sdk_s3::primitives::ByteStream;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const BUCKET: &str = "durable-code-local-observability-123456789012";
const ACCOUNT: &str = "123456789012";

/// The keys each backend's shipped config (config/*.yaml) puts its data under.
const BACKEND_PREFIXES: [&str; 4] = ["mimir/", "loki/", "tempo/", "pyroscope/"];

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

/// The document `stackwarden iam-policy --for host` prints for the local stack.
fn printed_host_policy() -> String {
    let out = Cli::new(&[
        "iam-policy",
        "--env",
        "local",
        "--for",
        "host",
        "--account",
        ACCOUNT,
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// An S3 client signing as IAM user `name`, who holds exactly `document`.
async fn principal_holding(moto: &Moto, name: &str, document: &str) -> aws_sdk_s3::Client {
    let admin = moto.sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&admin);
    iam.create_user().user_name(name).send().await.unwrap();
    iam.put_user_policy()
        .user_name(name)
        .policy_name("stackwarden-host")
        .policy_document(document)
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            key.access_key_id,
            key.secret_access_key,
            None,
            None,
            "host-policy",
        ))
        .endpoint_url(&moto.endpoint)
        .load()
        .await;
    stackwarden::provider::aws::s3_client(&config)
}

/// `Ok` or the error's code (`AccessDenied`).
fn outcome<T, E: aws_sdk_s3::error::ProvideErrorMetadata>(
    r: Result<T, aws_sdk_s3::error::SdkError<E>>,
) -> Result<(), String> {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    r.map(|_| ())
        .map_err(|e| e.code().unwrap_or("(no code)").to_string())
}

async fn put(s3: &aws_sdk_s3::Client, key: &str) -> Result<(), String> {
    outcome(
        s3.put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from_static(b"block"))
            .send()
            .await,
    )
}

async fn get(s3: &aws_sdk_s3::Client, key: &str) -> Result<(), String> {
    outcome(s3.get_object().bucket(BUCKET).key(key).send().await)
}

async fn delete(s3: &aws_sdk_s3::Client, key: &str) -> Result<(), String> {
    outcome(s3.delete_object().bucket(BUCKET).key(key).send().await)
}

/// A listing under `prefix`. Asked with the bare prefix (`mimir`, as Tempo's startup check
/// asks): moto refuses the signature of any S3 query holding a `/` once it enforces IAM
/// (docs/quirks.md), so `prefix=mimir/&delimiter=/` cannot be asked here.
async fn list(s3: &aws_sdk_s3::Client, prefix: &str) -> Result<(), String> {
    outcome(
        s3.list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix.trim_end_matches('/'))
            .send()
            .await,
    )
}

#[tokio::test]
async fn the_printed_host_policy_lets_each_backend_use_its_prefix_and_nothing_of_stackwardens() {
    let document = printed_host_policy();
    let moto = Moto::start_bare().await;
    let admin = stackwarden::provider::aws::s3_client(&moto.sdk_config().await);
    admin.create_bucket().bucket(BUCKET).send().await.unwrap();
    // What the host must not touch is there already: a pointer, a bundle, data outside every
    // backend's prefix.
    for key in [
        "stackwarden/local/current",
        "stackwarden/bundles/0000",
        "other/object",
        "mimirx/object",
    ] {
        put(&admin, key).await.unwrap();
    }
    let host = principal_holding(&moto, "host", &document).await;
    let nothing = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#;
    let bystander = principal_holding(&moto, "bystander", nothing).await;
    enforce_iam(&moto);

    for prefix in BACKEND_PREFIXES {
        let key = format!("{prefix}anonymous/01J000000000000000000000/index");
        assert_eq!(put(&host, &key).await, Ok(()), "PutObject {key}");
        assert_eq!(get(&host, &key).await, Ok(()), "GetObject {key}");
        assert_eq!(list(&host, prefix).await, Ok(()), "ListObjectsV2 {prefix}");
        assert_eq!(delete(&host, &key).await, Ok(()), "DeleteObject {key}");
    }

    let denied = Err("AccessDenied".to_string());
    // Signed delivery's objects: a backend (or any container reaching IMDS) writing them
    // would publish to the host.
    for key in ["stackwarden/local/current", "stackwarden/bundles/0000"] {
        assert_eq!(put(&host, key).await, denied, "PutObject {key}");
        assert_eq!(delete(&host, key).await, denied, "DeleteObject {key}");
    }
    // Outside every backend's prefix, including a key that only starts like one.
    for key in ["other/object", "mimirx/object", "loki_cluster_seed.json"] {
        assert_eq!(put(&host, key).await, denied, "PutObject {key}");
        assert_eq!(delete(&host, key).await, denied, "DeleteObject {key}");
    }
    assert_eq!(
        get(&host, "other/object").await,
        denied,
        "GetObject other/object"
    );

    // Enforcement is on: a principal holding nothing is refused the backends' keys.
    assert_eq!(
        put(&bystander, "mimir/x").await,
        denied,
        "enforcement is on"
    );
}

#[test]
fn the_shipped_configs_give_each_backend_a_prefix_of_its_own() {
    use stackwarden::manifest::backends::{Backend, layouts};
    let desired = stackwarden::manifest::load(&repo().join("manifests"), Some("local"))
        .unwrap()
        .desired;
    let found: Vec<(Backend, String, String)> =
        layouts(&desired, stackwarden::model::STACKWARDEN_KEYS)
            .unwrap()
            .into_iter()
            .flat_map(|l| {
                l.areas
                    .into_iter()
                    .map(move |a| (l.backend, a.bucket, a.keys.as_str().to_string()))
            })
            .collect();
    let bucket = "durable-code-local-observability-${account}".to_string();
    assert_eq!(
        found,
        Backend::ALL
            .into_iter()
            .zip(BACKEND_PREFIXES)
            .map(|(b, p)| (b, bucket.clone(), p.to_string()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn validate_refuses_a_backend_prefix_under_stackwardens_own_keys() {
    let tmp = tempfile::tempdir().unwrap();
    for sub in ["manifests", "config", "dashboards", "alerting"] {
        copy_dir(&repo().join(sub), &tmp.path().join(sub));
    }
    let tempo = tmp.path().join("config/tempo.yaml");
    let config = std::fs::read_to_string(&tempo).unwrap();
    std::fs::write(
        &tempo,
        config.replace("prefix: tempo", "prefix: stackwarden/local"),
    )
    .unwrap();

    let out = Cli::new(&["validate", "--env", "local", "-f"])
        .arg(tmp.path().join("manifests"))
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("config/tempo.yaml:")
            && said.contains("storage.trace.s3.prefix")
            && said.contains("stackwarden/local/* reaches stackwarden/*"),
        "{said}"
    );
    // And iam-policy prints nothing for it.
    let out = Cli::new(&[
        "iam-policy",
        "--env",
        "local",
        "--for",
        "host",
        "--account",
        ACCOUNT,
        "-f",
    ])
    .arg(tmp.path().join("manifests"))
    .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
}
