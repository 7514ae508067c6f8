//! S3: the bucket (public-access-block, default encryption, versioning, lifecycle, tags, and
//! who can reach it: [`access`]). Deletion policy Retain: nothing here ever deletes a bucket
//! or an object.

pub mod access;

use super::{AwsError, Observed, Op, check_owner, declared, desired_tags, is_owned, tag_drift};
use crate::model::{BucketSpec, Desired, Encryption, Kind, LifecycleRule, PublicAccessBlock, Tags};
use crate::plan::{Action, Change, FieldChange};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRuleFilter,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
    VersioningConfiguration,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Versioning as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled.
    Off,
    /// Enabled.
    Enabled,
    /// Suspended (counts as off).
    Suspended,
    /// Could not be read.
    Unknown,
}

/// A bucket as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveBucket {
    /// Its tags.
    pub tags: Tags,
    /// The four flags (all off when none is set).
    pub public_access_block: PublicAccessBlock,
    /// Default encryption (the algorithm of the first rule).
    pub encryption: Encryption,
    /// Encryption settings beyond the algorithm (a KMS key id, bucket keys, more rules).
    pub encryption_extras: Vec<String>,
    /// Versioning.
    pub versioning: Versioning,
    /// Every lifecycle rule, disabled ones and every action included.
    pub lifecycle: Vec<LiveLifecycleRule>,
    /// Policy, ACL and object ownership.
    pub access: access::LiveAccess,
}

/// A lifecycle rule as observed, completely: what the manifests can express (expiry by
/// prefix) and, rendered, everything else a person can add to a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLifecycleRule {
    /// Rule id (AWS bookkeeping: not compared).
    pub id: String,
    /// Status Enabled.
    pub enabled: bool,
    /// The filter's (or the legacy) prefix.
    pub prefix: String,
    /// Expiration in days.
    pub expiration_days: Option<u32>,
    /// Everything else: other filters, transitions, noncurrent-version actions, aborting
    /// multipart uploads, expiry by date or of delete markers.
    pub extras: Vec<String>,
}

impl LiveLifecycleRule {
    /// How the plan shows it; a declared rule shows as `prefix:Nd`.
    fn render(&self) -> String {
        let LiveLifecycleRule {
            id: _,
            enabled,
            prefix,
            expiration_days,
            extras,
        } = self;
        let mut text = match expiration_days {
            Some(d) => format!("{prefix}:{d}d"),
            None => format!("{prefix}:(no expiry)"),
        };
        for e in extras {
            text.push_str(&format!(" +{e}"));
        }
        if !enabled {
            text.push_str(" (disabled)");
        }
        text
    }
}

/// Reads one rule completely.
fn live_rule(r: &aws_sdk_s3::types::LifecycleRule) -> LiveLifecycleRule {
    let mut extras = Vec::new();
    #[allow(deprecated)]
    let legacy_prefix = r.prefix();
    let mut prefix = legacy_prefix.unwrap_or("").to_string();
    if let Some(f) = r.filter() {
        if let Some(p) = f.prefix() {
            prefix = p.to_string();
        }
        if let Some(t) = f.tag() {
            extras.push(format!("filter tag {}={}", t.key(), t.value()));
        }
        if let Some(n) = f.object_size_greater_than() {
            extras.push(format!("filter size>{n}"));
        }
        if let Some(n) = f.object_size_less_than() {
            extras.push(format!("filter size<{n}"));
        }
        if let Some(a) = f.and() {
            if let Some(p) = a.prefix() {
                prefix = p.to_string();
            }
            for t in a.tags() {
                extras.push(format!("filter tag {}={}", t.key(), t.value()));
            }
            if let Some(n) = a.object_size_greater_than() {
                extras.push(format!("filter size>{n}"));
            }
            if let Some(n) = a.object_size_less_than() {
                extras.push(format!("filter size<{n}"));
            }
        }
    }
    let mut expiration_days = None;
    if let Some(e) = r.expiration() {
        expiration_days = e.days().and_then(|d| u32::try_from(d).ok());
        if let Some(date) = e.date() {
            extras.push(format!("expire on {date}"));
        }
        if e.expired_object_delete_marker() == Some(true) {
            extras.push("expire delete markers".to_string());
        }
    }
    for t in r.transitions() {
        let when = match (t.days(), t.date()) {
            (Some(d), _) => format!("{d}d"),
            (None, Some(date)) => date.to_string(),
            _ => "?".to_string(),
        };
        let class = t.storage_class().map(|c| c.as_str()).unwrap_or("?");
        extras.push(format!("transition {when}→{class}"));
    }
    for t in r.noncurrent_version_transitions() {
        let class = t.storage_class().map(|c| c.as_str()).unwrap_or("?");
        extras.push(format!(
            "noncurrent transition {}d→{class}",
            t.noncurrent_days().unwrap_or(0)
        ));
    }
    if let Some(n) = r.noncurrent_version_expiration() {
        extras.push(format!(
            "noncurrent expiration {}d",
            n.noncurrent_days().unwrap_or(0)
        ));
    }
    if let Some(a) = r.abort_incomplete_multipart_upload() {
        extras.push(format!(
            "abort multipart {}d",
            a.days_after_initiation().unwrap_or(0)
        ));
    }
    extras.sort();
    LiveLifecycleRule {
        id: r.id().unwrap_or("").to_string(),
        enabled: *r.status() == ExpirationStatus::Enabled,
        prefix,
        expiration_days,
        extras,
    }
}

/// Bucket writes (what to write is read from the desired spec at apply time).
#[derive(Debug, PartialEq, Eq)]
pub enum BucketOp {
    /// Create the bucket.
    Create,
    /// Put the desired tags (keeping other live tags).
    Tag,
    /// Put the four public-access-block flags.
    PublicAccessBlock,
    /// Put (or delete) default encryption.
    Encryption,
    /// Put versioning.
    Versioning,
    /// Put the lifecycle configuration.
    Lifecycle,
    /// Bring policy, ACL or ownership back to the declaration.
    Access(access::AccessOp),
}

fn code_is<E: ProvideErrorMetadata>(e: &E, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

/// Reads a bucket's configuration; `None` when it does not exist.
pub async fn observe_bucket(
    client: &aws_sdk_s3::Client,
    name: &str,
) -> Result<Option<LiveBucket>, AwsError> {
    let res = format!("bucket {name}");
    let (tags, pab, enc, ver, life) = tokio::join!(
        client.get_bucket_tagging().bucket(name).send(),
        client.get_public_access_block().bucket(name).send(),
        client.get_bucket_encryption().bucket(name).send(),
        client.get_bucket_versioning().bucket(name).send(),
        client
            .get_bucket_lifecycle_configuration()
            .bucket(name)
            .send(),
    );
    let tags = match tags {
        Ok(t) => t
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect(),
        Err(e) if code_is(&e, &["NoSuchBucket"]) => return Ok(None),
        Err(e) if code_is(&e, &["NoSuchTagSet"]) => Tags::new(),
        Err(e) => return Err(AwsError::call("GetBucketTagging", res, e)),
    };
    let public_access_block = match pab {
        Ok(p) => {
            let c = p.public_access_block_configuration();
            PublicAccessBlock {
                block_public_acls: c.and_then(|c| c.block_public_acls()).unwrap_or(false),
                ignore_public_acls: c.and_then(|c| c.ignore_public_acls()).unwrap_or(false),
                block_public_policy: c.and_then(|c| c.block_public_policy()).unwrap_or(false),
                restrict_public_buckets: c
                    .and_then(|c| c.restrict_public_buckets())
                    .unwrap_or(false),
            }
        }
        Err(e) if code_is(&e, &["NoSuchPublicAccessBlockConfiguration"]) => PublicAccessBlock {
            block_public_acls: false,
            ignore_public_acls: false,
            block_public_policy: false,
            restrict_public_buckets: false,
        },
        Err(e) if code_is(&e, &["NoSuchBucket"]) => return Ok(None),
        Err(e) => return Err(AwsError::call("GetPublicAccessBlock", res, e)),
    };
    let (encryption, encryption_extras) = match enc {
        Ok(o) => {
            let rules = o
                .server_side_encryption_configuration()
                .map(|c| c.rules())
                .unwrap_or_default();
            let first = rules.first();
            let by_default = first.and_then(|r| r.apply_server_side_encryption_by_default());
            let algo = by_default.map(|d| d.sse_algorithm().clone());
            let mut extras = Vec::new();
            if let Some(key) = by_default.and_then(|d| d.kms_master_key_id()) {
                extras.push(format!("kms key {key}"));
            }
            if first.and_then(|r| r.bucket_key_enabled()) == Some(true) {
                extras.push("bucket key enabled".to_string());
            }
            if rules.len() > 1 {
                extras.push(format!("{} more rules", rules.len() - 1));
            }
            let encryption = match algo {
                Some(ServerSideEncryption::Aes256) => Encryption::Aes256,
                Some(ServerSideEncryption::AwsKms) | Some(ServerSideEncryption::AwsKmsDsse) => {
                    Encryption::Kms
                }
                _ => Encryption::None,
            };
            (encryption, extras)
        }
        Err(e) if code_is(&e, &["ServerSideEncryptionConfigurationNotFoundError"]) => {
            (Encryption::None, Vec::new())
        }
        Err(e) => return Err(AwsError::call("GetBucketEncryption", res, e)),
    };
    let versioning = match ver {
        Ok(v) => match v.status() {
            Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
            Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
            _ => Versioning::Off,
        },
        // moto's one known quirk (GetBucketVersioningResponse as the root element, HTTP 200,
        // no error code): read the status from its body. Any other error is an error.
        Err(e) => match moto_versioning_quirk(&e) {
            Some(v) => v,
            None => return Err(AwsError::call("GetBucketVersioning", res, e)),
        },
    };
    let lifecycle = match life {
        Ok(l) => l.rules().iter().map(live_rule).collect(),
        Err(e) if code_is(&e, &["NoSuchLifecycleConfiguration"]) => Vec::new(),
        Err(e) => return Err(AwsError::call("GetBucketLifecycleConfiguration", res, e)),
    };
    let access = access::observe(client, name).await?;
    Ok(Some(LiveBucket {
        tags,
        public_access_block,
        encryption,
        encryption_extras,
        versioning,
        lifecycle,
        access,
    }))
}

/// The versioning status when `e` is exactly moto's known answer: HTTP 200, no error code,
/// a body whose root element is `GetBucketVersioningResponse`. `None` for any other error.
fn moto_versioning_quirk<E: ProvideErrorMetadata>(
    e: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Option<Versioning> {
    let raw = e.raw_response()?;
    if raw.status().as_u16() != 200 || e.code().is_some() {
        return None;
    }
    let body = String::from_utf8_lossy(raw.body().bytes()?).into_owned();
    let root = body
        .trim_start()
        .trim_start_matches(|c| c != '<')
        .split("?>")
        .last()
        .unwrap_or("")
        .trim_start();
    if !root.starts_with("<GetBucketVersioningResponse") {
        return None;
    }
    match versioning_from_xml(&body) {
        Versioning::Unknown => None,
        v => Some(v),
    }
}

/// Reads `<Status>…</Status>` from a GetBucketVersioning body.
pub fn versioning_from_xml(body: &str) -> Versioning {
    let status = body
        .split("<Status>")
        .nth(1)
        .and_then(|rest| rest.split("</Status>").next());
    match status {
        Some("Enabled") => Versioning::Enabled,
        Some("Suspended") => Versioning::Suspended,
        None if body.contains("GetBucketVersioningResponse") => Versioning::Off,
        _ => Versioning::Unknown,
    }
}

fn enc_name(e: Encryption) -> &'static str {
    match e {
        Encryption::Aes256 => "AES256",
        Encryption::Kms => "aws:kms",
        Encryption::None => "none",
    }
}

/// Declared rules as the plan shows them, sorted.
fn wanted_rules(rules: &[LifecycleRule]) -> Vec<String> {
    let mut v: Vec<String> = rules
        .iter()
        .map(|r| format!("{}:{}d", r.prefix, r.expiration_days))
        .collect();
    v.sort();
    v
}

/// Live rules as the plan shows them, sorted.
fn live_rules(rules: &[LiveLifecycleRule]) -> Vec<String> {
    let mut v: Vec<String> = rules.iter().map(LiveLifecycleRule::render).collect();
    v.sort();
    v
}

/// The configuration changes a live bucket needs (tags aside). Pure. Every field of the
/// live type is named here, so a field added to it does not compile until it is compared.
pub fn diff_bucket(spec: &BucketSpec, live: &LiveBucket) -> (Vec<FieldChange>, Vec<BucketOp>) {
    let LiveBucket {
        // Compared by the caller, with ownership.
        tags: _,
        public_access_block,
        encryption,
        encryption_extras,
        versioning,
        lifecycle,
        access,
    } = live;
    let mut fields = Vec::new();
    let mut ops = Vec::new();
    let want = spec.public_access_block;
    let have = *public_access_block;
    let mut pab = false;
    for (name, w, h) in [
        (
            "publicAccessBlock.blockPublicAcls",
            want.block_public_acls,
            have.block_public_acls,
        ),
        (
            "publicAccessBlock.ignorePublicAcls",
            want.ignore_public_acls,
            have.ignore_public_acls,
        ),
        (
            "publicAccessBlock.blockPublicPolicy",
            want.block_public_policy,
            have.block_public_policy,
        ),
        (
            "publicAccessBlock.restrictPublicBuckets",
            want.restrict_public_buckets,
            have.restrict_public_buckets,
        ),
    ] {
        if w != h {
            fields.push(FieldChange::changed(name, h, w));
            pab = true;
        }
    }
    if pab {
        ops.push(BucketOp::PublicAccessBlock);
    }
    let encryption_differs = spec.encryption != *encryption || !encryption_extras.is_empty();
    if spec.encryption != *encryption {
        fields.push(FieldChange::changed(
            "encryption",
            enc_name(*encryption),
            enc_name(spec.encryption),
        ));
    }
    for e in encryption_extras {
        fields.push(FieldChange::removed("encryption", e));
    }
    if encryption_differs {
        ops.push(BucketOp::Encryption);
    }
    let live_on = match versioning {
        Versioning::Enabled => Some(true),
        Versioning::Off | Versioning::Suspended => Some(false),
        Versioning::Unknown => None,
    };
    if let Some(on) = live_on
        && on != spec.versioning
    {
        fields.push(FieldChange::changed("versioning", on, spec.versioning));
        ops.push(BucketOp::Versioning);
    }
    // Rules compare by prefix, days and every other action; ids and order are AWS
    // bookkeeping.
    let w = wanted_rules(&spec.lifecycle);
    let h = live_rules(lifecycle);
    if w != h {
        let show = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(",")
            }
        };
        fields.push(FieldChange::changed("lifecycle", show(&h), show(&w)));
        ops.push(BucketOp::Lifecycle);
    }
    let (access_fields, access_ops) = access::diff(spec, access);
    fields.extend(access_fields);
    ops.extend(access_ops.into_iter().map(BucketOp::Access));
    (fields, ops)
}

/// Fails when a declared bucket is tagged for another stack.
/// Whether the object at `s3://bucket/key` exists (HeadObject); the error says why it could not
/// be told.
pub async fn object_exists(client: &aws_sdk_s3::Client, url: &str) -> Result<bool, String> {
    let Some((bucket, key)) = url.strip_prefix("s3://").and_then(|r| r.split_once('/')) else {
        return Err(format!("{url} is not s3://bucket/key"));
    };
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let not_found = e.as_service_error().is_some_and(|s| s.is_not_found())
                || e.raw_response().map(|r| r.status().as_u16()) == Some(404);
            if not_found {
                Ok(false)
            } else {
                Err(AwsError::call("HeadObject", url.to_string(), e).to_string())
            }
        }
    }
}

pub fn check_owners(desired: &Desired, observed: &Observed) -> Result<(), AwsError> {
    for (r, spec) in desired.buckets() {
        if let Some(Some(l)) = observed.buckets.get(&r.id.name) {
            check_owner(
                || format!("{} (bucket {})", r.id, spec.name),
                &l.tags,
                desired,
            )?;
        }
    }
    Ok(())
}

/// Plans buckets: create, adopt, tags, configuration. Never deletes.
pub fn diff(desired: &Desired, observed: &Observed, plan: &mut ProviderPlan<Op>) {
    for (r, spec) in desired.buckets() {
        let Some(live) = observed.buckets.get(&r.id.name) else {
            continue;
        };
        let want_tags = desired_tags(desired, &r.id, &spec.tags);
        let (action, mut fields, mut ops) = match live {
            None => {
                let mut ops = vec![
                    BucketOp::Create,
                    BucketOp::PublicAccessBlock,
                    BucketOp::Encryption,
                    BucketOp::Versioning,
                    BucketOp::Lifecycle,
                    BucketOp::Access(access::AccessOp::Ownership),
                ];
                if spec.policy.is_some() {
                    ops.push(BucketOp::Access(access::AccessOp::PutPolicy));
                }
                (Action::Create, Vec::new(), ops)
            }
            Some(l) => {
                let mut live_spec = spec.clone();
                live_spec.public_access_block = l.public_access_block;
                live_spec.encryption = l.encryption;
                plan.violations
                    .extend(crate::policy::check_bucket(&r.id.to_string(), &live_spec));
                plan.violations.extend(access::violations(
                    &r.id.to_string(),
                    &l.access,
                    &observed.account,
                ));
                let (fields, ops) = diff_bucket(spec, l);
                let owned = is_owned(&l.tags, desired);
                if !owned {
                    tracing::info!(bucket = %spec.name, "bucket exists without ownership tags: planning to adopt it");
                }
                (
                    if owned { Action::Update } else { Action::Adopt },
                    fields,
                    ops,
                )
            }
        };
        if let Some(l) = live {
            // PutBucketTagging replaces the whole set: the one Tag op also drops extra tags.
            let (tf, _extra) = tag_drift(&want_tags, &l.tags).into_parts();
            if !tf.is_empty() {
                fields.extend(tf);
                ops.insert(0, BucketOp::Tag);
            }
        } else {
            ops.insert(1, BucketOp::Tag);
        }
        if action != Action::Create && ops.is_empty() {
            continue;
        }
        plan.steps.push(Step {
            change: Change::new(r.id.clone(), action).with_fields(fields),
            ops: ops.into_iter().map(Op::Bucket).collect(),
        });
    }
}

fn build_err(res: &str, e: impl std::fmt::Display) -> AwsError {
    AwsError::invalid(res, format!("building the request: {e}"))
}

/// Applies one bucket op.
pub async fn apply(
    client: &aws_sdk_s3::Client,
    desired: &Desired,
    change: &Change,
    op: BucketOp,
) -> Result<(), AwsError> {
    let spec = declared(desired.buckets(), Kind::Bucket, &change.id.name)?;
    let res = format!("{} ({})", change.id, spec.name);
    let b = spec.name.as_str();
    match op {
        BucketOp::Create => {
            let mut req = client.create_bucket().bucket(b);
            // us-east-1 takes no location constraint; every other region needs its own.
            let region = client
                .config()
                .region()
                .map(|r| r.to_string())
                .unwrap_or_default();
            if !region.is_empty() && region != "us-east-1" {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region.as_str()))
                        .build(),
                );
            }
            match req.send().await {
                Ok(_) => {}
                Err(e) if code_is(&e, &["BucketAlreadyOwnedByYou"]) => {}
                Err(e) => return Err(AwsError::call("CreateBucket", res, e)),
            }
        }
        BucketOp::Tag => {
            // Exactly the declared set: a tag added by hand is drift, and goes.
            let tags = desired_tags(desired, &change.id, &spec.tags);
            let set = tags
                .iter()
                .map(|(k, v)| {
                    Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| build_err(&res, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tagging = Tagging::builder()
                .set_tag_set(Some(set))
                .build()
                .map_err(|e| build_err(&res, e))?;
            client
                .put_bucket_tagging()
                .bucket(b)
                .tagging(tagging)
                .send()
                .await
                .map_err(|e| AwsError::call("PutBucketTagging", res, e))?;
        }
        BucketOp::PublicAccessBlock => {
            let p = spec.public_access_block;
            client
                .put_public_access_block()
                .bucket(b)
                .public_access_block_configuration(
                    PublicAccessBlockConfiguration::builder()
                        .block_public_acls(p.block_public_acls)
                        .ignore_public_acls(p.ignore_public_acls)
                        .block_public_policy(p.block_public_policy)
                        .restrict_public_buckets(p.restrict_public_buckets)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| AwsError::call("PutPublicAccessBlock", res, e))?;
        }
        BucketOp::Encryption => {
            let algo = match spec.encryption {
                Encryption::Aes256 => ServerSideEncryption::Aes256,
                Encryption::Kms => ServerSideEncryption::AwsKms,
                Encryption::None => {
                    client
                        .delete_bucket_encryption()
                        .bucket(b)
                        .send()
                        .await
                        .map_err(|e| AwsError::call("DeleteBucketEncryption", res, e))?;
                    return Ok(());
                }
            };
            let by_default = ServerSideEncryptionByDefault::builder()
                .sse_algorithm(algo)
                .build()
                .map_err(|e| build_err(&res, e))?;
            let conf = ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .build(),
                )
                .build()
                .map_err(|e| build_err(&res, e))?;
            client
                .put_bucket_encryption()
                .bucket(b)
                .server_side_encryption_configuration(conf)
                .send()
                .await
                .map_err(|e| AwsError::call("PutBucketEncryption", res, e))?;
        }
        BucketOp::Versioning => {
            // A bucket that never had versioning needs no call to stay without it.
            if !spec.versioning && change.action == Action::Create {
                return Ok(());
            }
            let status = if spec.versioning {
                BucketVersioningStatus::Enabled
            } else {
                BucketVersioningStatus::Suspended
            };
            client
                .put_bucket_versioning()
                .bucket(b)
                .versioning_configuration(VersioningConfiguration::builder().status(status).build())
                .send()
                .await
                .map_err(|e| AwsError::call("PutBucketVersioning", res, e))?;
        }
        BucketOp::Lifecycle => {
            if spec.lifecycle.is_empty() {
                if change.action == Action::Create {
                    return Ok(());
                }
                client
                    .delete_bucket_lifecycle()
                    .bucket(b)
                    .send()
                    .await
                    .map_err(|e| AwsError::call("DeleteBucketLifecycle", res, e))?;
                return Ok(());
            }
            let rules = spec
                .lifecycle
                .iter()
                .map(|r| {
                    aws_sdk_s3::types::LifecycleRule::builder()
                        .id(&r.id)
                        .filter(LifecycleRuleFilter::builder().prefix(&r.prefix).build())
                        .status(ExpirationStatus::Enabled)
                        .expiration(
                            LifecycleExpiration::builder()
                                .days(i32::try_from(r.expiration_days).unwrap_or(i32::MAX))
                                .build(),
                        )
                        .build()
                        .map_err(|e| build_err(&res, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let conf = BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .map_err(|e| build_err(&res, e))?;
            client
                .put_bucket_lifecycle_configuration()
                .bucket(b)
                .lifecycle_configuration(conf)
                .send()
                .await
                .map_err(|e| AwsError::call("PutBucketLifecycleConfiguration", res, e))?;
        }
        BucketOp::Access(op) => access::apply(client, spec, &res, op).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BucketSpec {
        BucketSpec {
            name: "b".into(),
            public_access_block: PublicAccessBlock::default(),
            encryption: Encryption::Aes256,
            versioning: false,
            lifecycle: vec![
                LifecycleRule {
                    id: "mimir".into(),
                    prefix: "mimir/".into(),
                    expiration_days: 7,
                },
                LifecycleRule {
                    id: "loki".into(),
                    prefix: "loki/".into(),
                    expiration_days: 7,
                },
            ],
            deletion_policy: Default::default(),
            tags: Tags::new(),
            policy: None,
            object_ownership: Default::default(),
        }
    }

    fn rule(id: &str, prefix: &str, days: u32) -> LiveLifecycleRule {
        LiveLifecycleRule {
            id: id.into(),
            enabled: true,
            prefix: prefix.into(),
            expiration_days: Some(days),
            extras: vec![],
        }
    }

    /// The struct literal names every field: a new one does not compile until it is given
    /// here, and then it needs a row in the table below.
    fn live() -> LiveBucket {
        LiveBucket {
            tags: Tags::new(),
            public_access_block: PublicAccessBlock::default(),
            encryption: Encryption::Aes256,
            encryption_extras: vec![],
            versioning: Versioning::Off,
            lifecycle: vec![rule("x", "loki/", 7), rule("y", "mimir/", 7)],
            access: access::LiveAccess {
                policy: None,
                ownership: Some("BucketOwnerEnforced".into()),
                foreign_grants: None,
            },
        }
    }

    #[test]
    fn every_bucket_field_changed_by_hand_is_seen() {
        type Edit = fn(&mut LiveBucket);
        let seen: Vec<(&str, Edit)> = vec![
            ("public_access_block", |l| {
                l.public_access_block.block_public_acls = false
            }),
            ("public_access_block", |l| {
                l.public_access_block.ignore_public_acls = false
            }),
            ("public_access_block", |l| {
                l.public_access_block.block_public_policy = false
            }),
            ("public_access_block", |l| {
                l.public_access_block.restrict_public_buckets = false
            }),
            ("encryption", |l| l.encryption = Encryption::Kms),
            ("encryption", |l| l.encryption = Encryption::None),
            ("encryption_extras", |l| {
                l.encryption_extras.push("bucket key enabled".into())
            }),
            ("versioning", |l| l.versioning = Versioning::Enabled),
            ("lifecycle", |l| l.lifecycle[0].expiration_days = Some(30)),
            ("lifecycle", |l| l.lifecycle[0].expiration_days = None),
            ("lifecycle", |l| l.lifecycle[0].prefix = "other/".into()),
            ("lifecycle", |l| l.lifecycle[0].enabled = false),
            ("lifecycle", |l| {
                l.lifecycle[0].extras.push("transition 30d→GLACIER".into())
            }),
            ("lifecycle", |l| {
                l.lifecycle[0]
                    .extras
                    .push("noncurrent expiration 7d".into())
            }),
            ("lifecycle", |l| {
                l.lifecycle[0].extras.push("abort multipart 7d".into())
            }),
            ("lifecycle", |l| l.lifecycle.push(rule("z", "tempo/", 1))),
            ("lifecycle", |l| {
                l.lifecycle.pop();
            }),
            // Each of its own fields has a case in access.rs.
            ("access", |l| {
                l.access.policy = Some(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}]}"#.into())
            }),
            ("access", |l| l.access.ownership = None),
            ("access", |l| {
                l.access.foreign_grants = Some(vec!["AllUsers READ".into()])
            }),
        ];
        // Tags are compared with ownership by `diff` (see the moto tests).
        let not_here = ["tags"];
        let LiveBucket {
            tags: _,
            public_access_block: _,
            encryption: _,
            encryption_extras: _,
            versioning: _,
            lifecycle: _,
            access: _,
        } = live();
        let LiveLifecycleRule {
            id: _,
            enabled: _,
            prefix: _,
            expiration_days: _,
            extras: _,
        } = rule("x", "p", 1);
        let fields = [
            "tags",
            "public_access_block",
            "encryption",
            "encryption_extras",
            "versioning",
            "lifecycle",
            "access",
        ];
        for f in fields {
            assert!(
                not_here.contains(&f) || seen.iter().any(|(n, _)| *n == f),
                "field {f} has no case"
            );
        }
        for (field, edit) in seen {
            let mut l = live();
            edit(&mut l);
            let (fields, ops) = diff_bucket(&spec(), &l);
            assert!(
                !fields.is_empty() && !ops.is_empty(),
                "a changed {field} is not seen"
            );
        }
    }

    #[test]
    fn a_matching_bucket_needs_nothing_whatever_the_rule_order_and_ids() {
        assert_eq!(diff_bucket(&spec(), &live()), (vec![], vec![]));
    }

    #[test]
    fn suspended_versioning_is_not_drift_when_off() {
        let mut l = live();
        l.versioning = Versioning::Suspended;
        assert!(diff_bucket(&spec(), &l).1.is_empty());
    }

    #[test]
    fn each_drift_maps_to_its_put() {
        let mut l = live();
        l.public_access_block.block_public_acls = false;
        l.encryption = Encryption::None;
        l.lifecycle[0].expiration_days = Some(30);
        let (fields, ops) = diff_bucket(&spec(), &l);
        assert_eq!(
            ops,
            vec![
                BucketOp::PublicAccessBlock,
                BucketOp::Encryption,
                BucketOp::Lifecycle
            ]
        );
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[2].old.as_deref(), Some("loki/:30d,mimir/:7d"));
    }

    fn versioning_error(
        status: u16,
        code: Option<&str>,
        body: &str,
    ) -> aws_smithy_runtime_api::client::result::SdkError<
        aws_sdk_s3::operation::get_bucket_versioning::GetBucketVersioningError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    > {
        let mut meta = aws_smithy_types::error::ErrorMetadata::builder();
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let raw = aws_smithy_runtime_api::client::orchestrator::HttpResponse::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
            aws_smithy_types::body::SdkBody::from(body.to_string()),
        );
        aws_smithy_runtime_api::client::result::SdkError::service_error(
            aws_sdk_s3::operation::get_bucket_versioning::GetBucketVersioningError::generic(
                meta.build(),
            ),
            raw,
        )
    }

    #[test]
    fn only_motos_versioning_answer_is_tolerated() {
        let moto = r#"<?xml version="1.0" encoding="UTF-8"?>
<GetBucketVersioningResponse xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></GetBucketVersioningResponse>"#;
        assert_eq!(
            moto_versioning_quirk(&versioning_error(200, None, moto)),
            Some(Versioning::Enabled)
        );
        // The same body with an error code, another status, or another root: an error.
        assert_eq!(
            moto_versioning_quirk(&versioning_error(200, Some("InternalError"), moto)),
            None
        );
        assert_eq!(
            moto_versioning_quirk(&versioning_error(403, None, moto)),
            None
        );
        assert_eq!(
            moto_versioning_quirk(&versioning_error(200, None, "<Html>proxy page</Html>")),
            None
        );
    }

    #[test]
    fn versioning_is_read_from_a_raw_body() {
        assert_eq!(
            versioning_from_xml(
                "<GetBucketVersioningResponse><Status>Enabled</Status></GetBucketVersioningResponse>"
            ),
            Versioning::Enabled
        );
        assert_eq!(
            versioning_from_xml("<GetBucketVersioningResponse/>"),
            Versioning::Off
        );
        assert_eq!(
            versioning_from_xml("<Error><Code>AccessDenied</Code></Error>"),
            Versioning::Unknown
        );
    }
}
