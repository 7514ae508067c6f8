//! S3: the bucket (public-access-block, default encryption, versioning, lifecycle, tags).
//! Deletion policy Retain: nothing here ever deletes a bucket or an object.

use super::{AwsError, Observed, Op, desired_tags, is_owned, tag_changes};
use crate::model::{BucketSpec, Desired, Encryption, LifecycleRule, PublicAccessBlock, Tags};
use crate::plan::{Action, Change, FieldChange};
use crate::provider::{ProviderPlan, Step};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRuleFilter,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
    VersioningConfiguration,
};

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
    /// Default encryption.
    pub encryption: Encryption,
    /// Versioning.
    pub versioning: Versioning,
    /// Lifecycle rules that expire by prefix.
    pub lifecycle: Vec<LifecycleRule>,
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
}

fn code_is<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    e: &E,
    codes: &[&str],
) -> bool {
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
    let encryption = match enc {
        Ok(o) => {
            let algo = o
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| d.sse_algorithm().clone());
            match algo {
                Some(ServerSideEncryption::Aes256) => Encryption::Aes256,
                Some(ServerSideEncryption::AwsKms) | Some(ServerSideEncryption::AwsKmsDsse) => {
                    Encryption::Kms
                }
                _ => Encryption::None,
            }
        }
        Err(e) if code_is(&e, &["ServerSideEncryptionConfigurationNotFoundError"]) => {
            Encryption::None
        }
        Err(e) => return Err(AwsError::call("GetBucketEncryption", res, e)),
    };
    let versioning = match ver {
        Ok(v) => match v.status() {
            Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
            Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
            _ => Versioning::Off,
        },
        // Some servers answer with a root element the SDK does not expect (HTTP 200, no error
        // code): read the status from the raw body rather than fail the whole observe.
        Err(e) => match e.raw_response().and_then(|r| r.body().bytes()) {
            Some(body) => versioning_from_xml(&String::from_utf8_lossy(body)),
            None => Versioning::Unknown,
        },
    };
    let lifecycle = match life {
        Ok(l) => l
            .rules()
            .iter()
            .filter(|r| *r.status() == ExpirationStatus::Enabled)
            .filter_map(|r| {
                #[allow(deprecated)]
                let prefix = r
                    .filter()
                    .and_then(|f| f.prefix())
                    .or(r.prefix())
                    .unwrap_or("");
                Some(LifecycleRule {
                    id: r.id().unwrap_or("").to_string(),
                    prefix: prefix.to_string(),
                    expiration_days: u32::try_from(r.expiration()?.days()?).ok()?,
                })
            })
            .collect(),
        Err(e) if code_is(&e, &["NoSuchLifecycleConfiguration"]) => Vec::new(),
        Err(e) => return Err(AwsError::call("GetBucketLifecycleConfiguration", res, e)),
    };
    Ok(Some(LiveBucket {
        tags,
        public_access_block,
        encryption,
        versioning,
        lifecycle,
    }))
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
        None if body.contains("VersioningConfiguration")
            || body.contains("GetBucketVersioning") =>
        {
            Versioning::Off
        }
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

fn sorted_rules(rules: &[LifecycleRule]) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = rules
        .iter()
        .map(|r| (r.prefix.clone(), r.expiration_days))
        .collect();
    v.sort();
    v
}

/// The configuration changes a live bucket needs (tags aside). Pure.
pub fn diff_bucket(spec: &BucketSpec, live: &LiveBucket) -> (Vec<FieldChange>, Vec<BucketOp>) {
    let mut fields = Vec::new();
    let mut ops = Vec::new();
    let want = spec.public_access_block;
    let have = live.public_access_block;
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
    if spec.encryption != live.encryption {
        fields.push(FieldChange::changed(
            "encryption",
            enc_name(live.encryption),
            enc_name(spec.encryption),
        ));
        ops.push(BucketOp::Encryption);
    }
    let live_on = match live.versioning {
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
    // Rules compare by prefix and days; ids and order are AWS bookkeeping.
    let w = sorted_rules(&spec.lifecycle);
    let h = sorted_rules(&live.lifecycle);
    if w != h {
        let show = |v: &[(String, u32)]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.iter()
                    .map(|(p, d)| format!("{p}:{d}d"))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        fields.push(FieldChange::changed("lifecycle", show(&h), show(&w)));
        ops.push(BucketOp::Lifecycle);
    }
    (fields, ops)
}

/// Plans buckets: create, adopt, tags, configuration. Never deletes.
pub fn diff(desired: &Desired, observed: &Observed, plan: &mut ProviderPlan<Op>) {
    for (r, spec) in desired.buckets() {
        let Some(live) = observed.buckets.get(&r.id.name) else {
            continue;
        };
        let want_tags = desired_tags(desired, &spec.tags);
        let (action, mut fields, mut ops) = match live {
            None => {
                let ops = vec![
                    BucketOp::Create,
                    BucketOp::PublicAccessBlock,
                    BucketOp::Encryption,
                    BucketOp::Versioning,
                    BucketOp::Lifecycle,
                ];
                (Action::Create, Vec::new(), ops)
            }
            Some(l) => {
                let mut live_spec = spec.clone();
                live_spec.public_access_block = l.public_access_block;
                live_spec.encryption = l.encryption;
                plan.violations
                    .extend(crate::policy::check_bucket(&r.id.to_string(), &live_spec));
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
            let tf = tag_changes(&want_tags, &l.tags);
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

fn spec_of<'a>(desired: &'a Desired, change: &Change) -> Result<&'a BucketSpec, AwsError> {
    desired
        .buckets()
        .find(|(r, _)| r.id == change.id)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(change.id.to_string(), "not declared"))
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
    let spec = spec_of(desired, change)?;
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
            // Keep tags others put on the bucket: PutBucketTagging replaces the whole set.
            let mut tags = match client.get_bucket_tagging().bucket(b).send().await {
                Ok(t) => t
                    .tag_set()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect(),
                Err(e) if code_is(&e, &["NoSuchTagSet"]) => Tags::new(),
                Err(e) => return Err(AwsError::call("GetBucketTagging", res, e)),
            };
            tags.extend(desired_tags(desired, &spec.tags));
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
        }
    }

    fn live() -> LiveBucket {
        LiveBucket {
            tags: Tags::new(),
            public_access_block: PublicAccessBlock::default(),
            encryption: Encryption::Aes256,
            versioning: Versioning::Off,
            lifecycle: vec![
                LifecycleRule {
                    id: "x".into(),
                    prefix: "loki/".into(),
                    expiration_days: 7,
                },
                LifecycleRule {
                    id: "y".into(),
                    prefix: "mimir/".into(),
                    expiration_days: 7,
                },
            ],
        }
    }

    #[test]
    fn a_matching_bucket_needs_nothing_whatever_the_rule_order_and_ids() {
        assert_eq!(diff_bucket(&spec(), &live()), (vec![], vec![]));
    }

    #[test]
    fn suspended_or_unreadable_versioning_is_not_drift_when_off() {
        let mut l = live();
        l.versioning = Versioning::Suspended;
        assert!(diff_bucket(&spec(), &l).1.is_empty());
        l.versioning = Versioning::Unknown;
        assert!(diff_bucket(&spec(), &l).1.is_empty());
    }

    #[test]
    fn each_drift_maps_to_its_put() {
        let mut l = live();
        l.public_access_block.block_public_acls = false;
        l.encryption = Encryption::None;
        l.lifecycle[0].expiration_days = 30;
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
    }
}
