//! The AWS provider: EC2 (security groups, the instance, lookups), ELBv2 (target group,
//! listener rules), S3 (the bucket) and SSM (the parameter, reachability). `observe` reads with
//! batched describe calls, `diff` is pure (one module per service holds its diff and its unit
//! tests), `apply` runs steps phase by phase in dependency order. It writes only to resources
//! carrying the ownership tags, and never to lookups.

pub mod calls;
mod ec2;
mod elbv2;
mod error;
mod iam;
pub mod permissions;
mod s3;
mod ssm;
pub use ssm::read_value as read_parameter_value;

use crate::model::ownership::SPEC_HASH_TAG;
use crate::model::{Desired, Kind, LookupSpec, LookupType, ResourceId, Tags};
use crate::plan::{Action, Cause, Change, Unobserved};
use crate::provider::{
    ErrorClass as Class, Provider, ProviderError, ProviderPlan, Stats, Step, StepError,
    StepOutcome, WriteGate,
};
use futures_util::future::join_all;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use ec2::{InstanceOp, LiveGroup, LiveInstance, SecurityGroupOp};
pub use elbv2::{ElbObserved, ListenerRuleOp, TargetGroupOp};
pub use error::{AwsError, ErrorClass};
pub use iam::{LivePolicy, LiveRole};
pub use s3::{BucketOp, LiveBucket};
pub use ssm::{LiveParameter, ParameterOp, Secret, SecretRead, SsmReach};

/// The provider's name in logs and errors.
const NAME: &str = "aws";
/// How long looked-up VPC and subnet ids are reused: long enough for a daemon's cycles to skip
/// them, short enough that re-tagged infrastructure is seen within minutes.
const LOOKUP_TTL: Duration = Duration::from_secs(300);
/// A TCP connect to an endpoint takes milliseconds; 3 s covers a slow network while an
/// unreachable endpoint fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Every call we make answers well under a second; 8 s per attempt leaves room for a slow
/// answer (a loaded machine, a local server loading a service on its first request) while
/// an endpoint that accepts and never answers fails a plan in seconds.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// All attempts of one call, backoff included: the hard deadline of any AWS call.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);
/// Attempts per call (the first and two retries of transient failures).
const MAX_ATTEMPTS: u32 = 3;
/// First retry backoff; the SDK doubles it with jitter.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// Live AWS state of everything the desired state names, and of what this stack owns.
#[derive(Debug, Default)]
pub struct Observed {
    /// The account of the credentials in use.
    pub account: String,
    /// Security groups by group name (managed and looked-up ones).
    pub groups: BTreeMap<String, LiveGroup>,
    /// Instances not terminated.
    pub instances: Vec<LiveInstance>,
    /// Subnet ids each subnet Lookup of an instance selects, by Lookup name.
    pub subnets: BTreeMap<String, Vec<String>>,
    /// Whether SSM sees each instance, by instance id.
    pub ssm: HashMap<String, SsmReach>,
    /// Buckets by manifest name (`None`: it does not exist).
    pub buckets: BTreeMap<String, Option<LiveBucket>>,
    /// Parameters by manifest name (`None`: it does not exist).
    pub parameters: BTreeMap<String, Option<LiveParameter>>,
    /// The desired secret values, by Parameter manifest name (read at observe: diff does no I/O).
    pub secrets: BTreeMap<String, SecretRead>,
    /// Target groups, listeners and rules.
    pub elb: ElbObserved,
    /// The roles of instanceProfile Lookups, by Lookup manifest name (`None`: no role).
    pub iam: BTreeMap<String, Option<LiveRole>>,
    /// Whether each artifact an Instance's bootstrap pins is in its bucket, by object URL
    /// (`s3://bucket/key`): a new instance would fail to bootstrap without it.
    pub artifacts: BTreeMap<String, Result<bool, String>>,
    /// Resources whose calls failed: they are Unknown this pass, the rest is planned.
    pub unobserved: Vec<Unobserved>,
}

/// One typed write, per kind.
#[derive(Debug)]
pub enum Op {
    /// See [`SecurityGroupOp`].
    SecurityGroup(SecurityGroupOp),
    /// See [`BucketOp`].
    Bucket(BucketOp),
    /// See [`ParameterOp`].
    Parameter(ParameterOp),
    /// See [`InstanceOp`].
    Instance(InstanceOp),
    /// See [`TargetGroupOp`].
    TargetGroup(TargetGroupOp),
    /// See [`ListenerRuleOp`].
    ListenerRule(ListenerRuleOp),
}

/// Ids learnt during an apply (a created group's id is needed by the instance, the instance's by
/// the target group, the target group's ARN by the rules), seeded from observed state.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// Group ids by group name.
    pub groups: Mutex<HashMap<String, String>>,
    /// Instance ids by Instance manifest name.
    pub instances: Mutex<HashMap<String, String>>,
    /// Target group ARNs by target group name.
    pub target_groups: Mutex<HashMap<String, String>>,
}

impl Resolved {
    fn get(map: &Mutex<HashMap<String, String>>, key: &str) -> Option<String> {
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn set(map: &Mutex<HashMap<String, String>>, key: &str, value: String) {
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value);
    }
}

/// Looked-up network ids, cached for [`LOOKUP_TTL`].
#[derive(Debug, Clone, Default)]
struct NetworkCache {
    vpcs: HashMap<String, String>,
    subnets: HashMap<String, Vec<String>>,
}

/// The AWS provider: service clients, call statistics and small caches.
pub struct AwsProvider {
    ec2: aws_sdk_ec2::Client,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    s3: aws_sdk_s3::Client,
    ssm: aws_sdk_ssm::Client,
    sts: aws_sdk_sts::Client,
    iam: aws_sdk_iam::Client,
    /// Instance profile roles and policy documents by version, kept across passes.
    iam_cache: Mutex<iam::Cache>,
    stats: Arc<Stats>,
    account: Mutex<Option<String>>,
    /// Groups described by `account_id()`, handed to the next observe so the plan that follows
    /// does not describe them twice.
    prefetched_groups: Mutex<Option<Vec<aws_sdk_ec2::types::SecurityGroup>>>,
    network: Mutex<Option<(Instant, NetworkCache)>>,
    /// Where calls go, for errors where the endpoint never answered.
    endpoint: String,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider").finish_non_exhaustive()
    }
}

/// The SDK's default chain (AWS_REGION, credentials, AWS_ENDPOINT_URL), with `region` as the
/// fallback region, and the deadlines every call keeps (credential and region look-ups too).
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    let chain = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::new(region.to_string()));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(chain)
        .timeout_config(timeouts())
        .retry_config(retries())
        .load()
        .await
}

/// Connect, attempt and operation deadlines for every call.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(ATTEMPT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The slowest transfer rate a large upload or download is allowed before it counts as
/// stuck: far below any real link, so only a dead one trips it.
const SLOWEST_TRANSFER: u64 = 1 << 20;

/// Deadlines for a call that moves `bytes` (an artifact of hundreds of megabytes): the
/// every-call deadlines plus one second per MiB. A fixed 8 s would fail any artifact larger
/// than 8 s of the link's speed, from CI to real S3 as well as on a loaded machine.
pub fn transfer_timeouts(bytes: u64) -> aws_config::timeout::TimeoutConfig {
    let attempt = ATTEMPT_TIMEOUT + Duration::from_secs(bytes / SLOWEST_TRANSFER);
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * MAX_ATTEMPTS + OPERATION_TIMEOUT - ATTEMPT_TIMEOUT)
        .build()
}

/// Bounded retries of transient failures.
pub fn retries() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
}

/// The one way an S3 client is configured: path-style addressing when an endpoint URL is
/// set (a host-name endpoint would otherwise get virtual-host buckets, bucket.localhost),
/// and this provider's deadlines and bounded retries.
fn s3_config(config: &aws_config::SdkConfig) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::from(config)
        .timeout_config(timeouts())
        .retry_config(retries())
        .force_path_style(config.endpoint_url().is_some())
}

/// An S3 client outside the provider's call count: the stack's lease, which is not a call
/// about the stack's resources.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(s3_config(config).build())
}

/// An SSM client in `region` with the provider's deadlines and retries, counting into
/// `stats`: the host reads a secret ConfigFile's Parameter with it (the daemon on the host
/// has no other copy of the value).
pub async fn parameter_client(region: &str, stats: Arc<Stats>) -> aws_sdk_ssm::Client {
    let config = sdk_config(region).await;
    aws_sdk_ssm::Client::from_conf(ssm_config(&config, calls::CallCounter::new(stats)))
}

/// SSM's client config: counted, with the provider's deadlines and bounded retries.
fn ssm_config(config: &aws_config::SdkConfig, counter: calls::CallCounter) -> aws_sdk_ssm::Config {
    aws_sdk_ssm::config::Builder::from(config)
        .interceptor(counter)
        .timeout_config(timeouts())
        .retry_config(retries())
        .build()
}

impl AwsProvider {
    /// Builds the service clients from an SDK config (S3 gets force_path_style(true) when an
    /// endpoint URL is set). Whatever config is given, every client keeps this provider's
    /// deadlines and bounded retries.
    pub fn new(config: &aws_config::SdkConfig, stats: Arc<Stats>) -> AwsProvider {
        let counter = calls::CallCounter::new(stats.clone());
        let ec2 = aws_sdk_ec2::config::Builder::from(config)
            .interceptor(counter.clone())
            .timeout_config(timeouts())
            .retry_config(retries())
            .build();
        let elbv2 = aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
            .interceptor(counter.clone())
            .timeout_config(timeouts())
            .retry_config(retries())
            .build();
        let s3 = s3_config(config).interceptor(counter.clone()).build();
        let ssm = ssm_config(config, counter.clone());
        let sts = aws_sdk_sts::config::Builder::from(config)
            .interceptor(counter.clone())
            .timeout_config(timeouts())
            .retry_config(retries())
            .build();
        let iam = aws_sdk_iam::config::Builder::from(config)
            .interceptor(counter)
            .timeout_config(timeouts())
            .retry_config(retries())
            .build();
        let endpoint = config
            .endpoint_url()
            .map(str::to_string)
            .unwrap_or_else(|| "(the SDK's regional endpoint)".to_string());
        AwsProvider {
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(elbv2),
            s3: aws_sdk_s3::Client::from_conf(s3),
            ssm: aws_sdk_ssm::Client::from_conf(ssm),
            sts: aws_sdk_sts::Client::from_conf(sts),
            iam: aws_sdk_iam::Client::from_conf(iam),
            iam_cache: Mutex::new(iam::Cache::default()),
            stats,
            account: Mutex::new(None),
            prefetched_groups: Mutex::new(None),
            network: Mutex::new(None),
            endpoint,
        }
    }

    /// Names the endpoint in an error where it never answered (the service said nothing).
    fn name_endpoint(&self, e: AwsError) -> AwsError {
        if e.is_unanswered() {
            AwsError::Endpoint {
                endpoint: self.endpoint.clone(),
                source: Box::new(e),
            }
        } else {
            e
        }
    }

    /// A provider error for an AWS error, naming the endpoint when it never answered.
    fn fail(&self, e: AwsError) -> ProviderError {
        ProviderError::of(crate::plan::World::Aws, self.name_endpoint(e))
    }

    /// Marks every declared resource of `kinds` unobserved because of `e`.
    fn unobserved(
        &self,
        desired: &Desired,
        kinds: &[Kind],
        e: AwsError,
        out: &mut Vec<Unobserved>,
    ) {
        let e = self.name_endpoint(e);
        let (class, error) = (e.class(), e.to_string());
        tracing::warn!(error = %error, "observe failed; these resources are unknown this pass");
        out.extend(
            desired
                .resources
                .iter()
                .filter(|r| kinds.contains(&r.id.kind))
                .map(|r| Unobserved {
                    id: r.id.clone(),
                    class,
                    error: error.clone(),
                }),
        );
    }

    /// The call statistics this provider records into.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The account of the credentials in use (fills `${account}` in bucket names). Read from the
    /// owner of the security groups the next observe needs anyway; STS only when there are none.
    pub async fn account_id(&self) -> Result<String, ProviderError> {
        if let Some(a) = self
            .account
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(a);
        }
        let groups = ec2::describe_groups(&self.ec2)
            .await
            .map_err(|e| self.fail(e))?;
        let owner = groups.iter().find_map(|g| g.owner_id().map(str::to_string));
        *self
            .prefetched_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(groups);
        let account = match owner {
            Some(a) => a,
            None => {
                let out =
                    self.sts.get_caller_identity().send().await.map_err(|e| {
                        self.fail(AwsError::call("GetCallerIdentity", "account", e))
                    })?;
                out.account().map(str::to_string).ok_or_else(|| {
                    ProviderError::plain(
                        crate::plan::World::Aws,
                        Class::Transient,
                        "GetCallerIdentity returned no account",
                    )
                })?
            }
        };
        *self.account.lock().unwrap_or_else(|e| e.into_inner()) = Some(account.clone());
        Ok(account)
    }

    async fn groups(&self) -> Result<Vec<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
        let pre = self
            .prefetched_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match pre {
            Some(g) => Ok(g),
            None => ec2::describe_groups(&self.ec2).await,
        }
    }

    /// VPC and subnet ids of the lookups, read only when something is created (cached).
    async fn network(&self, desired: &Desired) -> Result<NetworkCache, AwsError> {
        if let Some((at, cache)) = self
            .network
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            && at.elapsed() < LOOKUP_TTL
        {
            return Ok(cache);
        }
        let cache = ec2::lookup_network(&self.ec2, desired).await?;
        *self.network.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), cache.clone()));
        Ok(cache)
    }

    async fn observe_all(&self, desired: &Desired) -> Result<Observed, AwsError> {
        let buckets = join_all(desired.buckets().map(|(r, b)| {
            let name = r.id.name.clone();
            async move { (name, s3::observe_bucket(&self.s3, &b.name).await) }
        }));
        let params = join_all(desired.parameters().map(|(r, p)| {
            let name = r.id.name.clone();
            let secret = ssm::read_secret(&p.value_from);
            async move {
                let live = ssm::observe_parameter(&self.ssm, &p.name).await;
                (name, live, secret)
            }
        }));
        let needs_ec2 = desired.security_groups().next().is_some()
            || desired.instances().next().is_some()
            || desired
                .lookups()
                .any(|(_, l)| l.kind == LookupType::SecurityGroup);
        let groups = async {
            if needs_ec2 {
                self.groups().await
            } else {
                Ok(Vec::new())
            }
        };
        let instances = async {
            if desired.instances().next().is_some() {
                ec2::observe_instances(&self.ec2, desired).await
            } else {
                Ok(ec2::InstancesObserved::default())
            }
        };
        let elb = elbv2::observe(&self.elbv2, desired);
        let roles = join_all(
            desired
                .lookups()
                .filter(|(_, l)| l.kind == LookupType::InstanceProfile)
                .filter_map(|(r, l)| Some((r.id.name.clone(), l.name.clone()?)))
                .map(|(manifest, profile)| async move {
                    let role = iam::observe(&self.iam, &self.iam_cache, &profile).await;
                    (manifest, role)
                }),
        );
        let (groups, instances, elb, buckets, params, roles) =
            tokio::join!(groups, instances, elb, buckets, params, roles);
        // An endpoint that does not answer at all is the whole world unreachable, not one
        // resource: the provider fails (and the daemon goes not-ready).
        let (groups, instances, elb) = (answered(groups)?, answered(instances)?, answered(elb)?);
        let buckets = buckets
            .into_iter()
            .map(|(n, r)| answered(r).map(|r| (n, r)))
            .collect::<Result<Vec<_>, _>>()?;
        let params = params
            .into_iter()
            .map(|(n, r, secret)| answered(r).map(|r| (n, r, secret)))
            .collect::<Result<Vec<_>, _>>()?;
        let roles = roles
            .into_iter()
            .map(|(n, r)| answered(r).map(|r| (n, r)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut unobserved = Vec::new();
        // One failed describe leaves what it covers unknown, and what is planned from it:
        // instances reference groups, and target groups register instances.
        let ec2_kinds = [
            Kind::SecurityGroup,
            Kind::Instance,
            Kind::TargetGroup,
            Kind::ListenerRule,
        ];
        let (groups, instances, elb) = match (groups, instances) {
            (Ok(g), Ok(i)) => match elb {
                Ok(elb) => (g, i, elb),
                Err(e) => {
                    self.unobserved(desired, &ec2_kinds[2..], e, &mut unobserved);
                    (g, i, ElbObserved::default())
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                self.unobserved(desired, &ec2_kinds, e, &mut unobserved);
                (
                    Vec::new(),
                    ec2::InstancesObserved::default(),
                    ElbObserved::default(),
                )
            }
        };
        let groups_by_name = ec2::live_groups(&groups, &desired.stack_name, &desired.environment);
        ec2::check_ownership(desired, &groups_by_name, &instances.instances)?;
        let mut observed = Observed {
            groups: groups_by_name,
            instances: instances.instances,
            subnets: instances.subnets,
            elb,
            ..Observed::default()
        };
        let mut one_failed = |kind: Kind, name: &str, e: AwsError| {
            let e = self.name_endpoint(e);
            tracing::warn!(resource = %format!("{kind}/{name}"), error = %e, "observe failed; unknown this pass");
            unobserved.push(Unobserved {
                id: crate::model::ResourceId::new(kind, name),
                class: e.class(),
                error: e.to_string(),
            });
        };
        for (name, role) in roles {
            match role {
                Ok(role) => {
                    observed.iam.insert(name, role);
                }
                Err(e) => one_failed(Kind::Lookup, &name, e),
            }
        }
        if let Some(owner) = groups.iter().find_map(|g| g.owner_id()) {
            observed.account = owner.to_string();
            *self.account.lock().unwrap_or_else(|e| e.into_inner()) = Some(owner.to_string());
        }
        for (name, live) in buckets {
            match live {
                Ok(live) => {
                    observed.buckets.insert(name, live);
                }
                Err(e) => one_failed(Kind::Bucket, &name, e),
            }
        }
        for (name, live, secret) in params {
            match live {
                Ok(live) => {
                    observed.parameters.insert(name.clone(), live);
                    observed.secrets.insert(name, secret);
                }
                Err(e) => one_failed(Kind::Parameter, &name, e),
            }
        }
        // Ownership is absolute: a resource tagged for another stack stops the pass.
        elbv2::check_owners(desired, &observed.elb)?;
        s3::check_owners(desired, &observed)?;
        ssm::check_owners(desired, &observed)?;
        let running: Vec<String> = observed
            .instances
            .iter()
            .filter(|i| i.state == "running")
            .filter(|i| ec2::owned(&i.tags, desired))
            .map(|i| i.id.clone())
            .collect();
        if !running.is_empty() {
            observed.ssm = ssm::reachability(&self.ssm, &running).await;
        }
        for url in crate::bootstrap::pinned_artifacts(desired) {
            let present = s3::object_exists(&self.s3, &url).await;
            observed.artifacts.insert(url, present);
        }
        observed.unobserved = unobserved;
        Ok(observed)
    }

    async fn apply_step(&self, ctx: &ApplyCtx<'_>, step: Step<Op>) -> StepOutcome {
        let change = step.change.clone();
        if let Err(e) = ctx.gate.admit(&change).await {
            tracing::warn!(resource = %change.id, error = %e.message, "step not admitted");
            return StepOutcome::failed(change, e);
        }
        let mut error: Option<StepError> = None;
        for op in step.ops {
            let result = match op {
                Op::SecurityGroup(op) => ec2::apply_group(self, ctx, &change, op).await,
                Op::Instance(op) => ec2::apply_instance(self, ctx, &change, op).await,
                Op::Bucket(op) => s3::apply(&self.s3, ctx.desired, &change, op).await,
                Op::Parameter(op) => ssm::apply(&self.ssm, ctx, &change, op).await,
                Op::TargetGroup(op) => elbv2::apply_target_group(self, ctx, &change, op).await,
                Op::ListenerRule(op) => elbv2::apply_rule(self, ctx, &change, op).await,
            };
            if let Err(e) = result {
                let e = self.name_endpoint(e);
                tracing::warn!(resource = %change.id, error = %e, "apply step failed");
                error = Some(StepError {
                    class: e.class(),
                    message: format!("{}: {e}", change.id),
                });
                break;
            }
        }
        match error {
            None => {
                tracing::info!(resource = %change.id, action = change.action.verb(), "applied");
                StepOutcome::done(change)
            }
            Some(e) => StepOutcome::failed(change, e),
        }
    }
}

/// Splits off the failure of a call that got no answer at all (the endpoint is down): that
/// fails the whole observe; an answered failure stays with its resource.
fn answered<T>(r: Result<T, AwsError>) -> Result<Result<T, AwsError>, AwsError> {
    match r {
        Err(e) if e.is_unanswered() => Err(e),
        other => Ok(other),
    }
}

/// What every apply op can read: the desired state, observed state and ids learnt so far.
pub(crate) struct ApplyCtx<'a> {
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub resolved: Resolved,
    /// Asked before each step's first write.
    pub gate: &'a dyn WriteGate,
}

/// The phase of a step: deletions of dependents first, then the base, then what builds on it.
/// Exhaustive on purpose: a new kind does not compile until its place in the order is chosen.
fn phase(change: &Change) -> u8 {
    let delete = change.action == Action::Delete;
    match change.id.kind {
        Kind::ListenerRule if delete => 0,
        Kind::TargetGroup if delete => 1,
        Kind::Instance if delete => 2,
        Kind::SecurityGroup | Kind::Bucket | Kind::Parameter | Kind::Lookup => 3,
        Kind::Instance => 4,
        Kind::TargetGroup => 5,
        Kind::ListenerRule => 6,
        // Host and stack kinds: this provider never plans them.
        Kind::Stack | Kind::ConfigFile | Kind::Container => 7,
    }
}

/// Least-privilege violations of the instance profiles' roles (IAM is never written).
fn diff_roles(desired: &Desired, observed: &Observed, plan: &mut ProviderPlan<Op>) {
    let buckets: Vec<String> = desired.buckets().map(|(_, b)| b.name.clone()).collect();
    let guarded = iam::delivery_objects(&buckets, &desired.environment);
    for (r, l) in desired.lookups() {
        if let Some(Some(role)) = observed.iam.get(&r.id.name) {
            plan.violations.extend(iam::violations(
                &r.id.to_string(),
                role,
                &l.allowed_policies,
                &buckets,
                &guarded,
            ));
        }
    }
}

/// A Lookup by manifest name.
pub(crate) fn lookup<'a>(desired: &'a Desired, name: &str) -> Option<&'a LookupSpec> {
    desired
        .lookups()
        .find(|(r, _)| r.id.name == name)
        .map(|(_, l)| l)
}

/// The declared spec an op names, from one of `desired`'s accessors (`desired.instances()`, …)
/// by manifest name. Ops are planned from declared resources, so a miss is an invalid step
/// (the manifests changed between plan and apply), never a panic.
pub(crate) fn declared<'a, T: 'a>(
    mut specs: impl Iterator<Item = (&'a crate::model::Resource, &'a T)>,
    kind: Kind,
    name: &str,
) -> Result<&'a T, AwsError> {
    specs
        .find(|(r, _)| r.id.name == name)
        .map(|(_, s)| s)
        .ok_or_else(|| AwsError::invalid(ResourceId::new(kind, name).to_string(), "not declared"))
}

/// The group name a manifest reference (SecurityGroup or securityGroup Lookup) stands for.
pub(crate) fn group_name_of(desired: &Desired, manifest_name: &str) -> Option<String> {
    if let Some((_, sg)) = desired
        .security_groups()
        .find(|(r, _)| r.id.name == manifest_name)
    {
        return Some(sg.name.clone());
    }
    lookup(desired, manifest_name).and_then(|l| l.name.clone())
}

/// Desired tags of a resource: the ownership tags, the hash of its spec, plus its own.
pub(crate) fn desired_tags(desired: &Desired, id: &ResourceId, own: &Tags) -> Tags {
    let mut tags = own.clone();
    tags.extend(desired.ownership_tags());
    if let Some(r) = desired.get(id.kind, &id.name) {
        tags.insert(SPEC_HASH_TAG.to_string(), r.spec_hash());
    }
    tags
}

/// Tells a hand-made change from a reviewed one by the spec hash the live resource records
/// (see [`SPEC_HASH_TAG`]): an update that rewrites the hash applies a changed manifest; one
/// that leaves it alone, or adds a missing one, puts back what someone changed. A replacement is always the
/// manifest's: only fields that cannot change in place force one, so no hand made it. A
/// delete of what the manifest now says is absent (a disabled stack) is the manifest's too.
fn attribute_cause(desired: &Desired, change: &mut Change) {
    let hash_field = format!("tags.{SPEC_HASH_TAG}");
    let absent = desired
        .get(change.id.kind, &change.id.name)
        .is_some_and(|r| r.ensure == crate::model::Ensure::Absent);
    change.cause = match change.action {
        Action::Create => Cause::Missing,
        Action::Replace => Cause::Manifest,
        Action::Delete if absent => Cause::Manifest,
        Action::Delete => Cause::Drift,
        // Only a recorded hash that differs says the manifest moved; none at all is a copy
        // made by hand (or a resource from before hashes were recorded): drift.
        Action::Update | Action::Adopt => {
            if change
                .fields
                .iter()
                .any(|f| f.path == hash_field && f.old.is_some())
            {
                Cause::Manifest
            } else {
                Cause::Drift
            }
        }
    };
}

/// Tags that are missing or differ (extra live tags are not drift: AWS and people add some).
pub(crate) fn tag_changes(want: &Tags, live: &Tags) -> Vec<crate::plan::FieldChange> {
    want.iter()
        .filter(|(k, v)| live.get(*k) != Some(*v))
        .map(|(k, v)| match live.get(k) {
            Some(old) => crate::plan::FieldChange::changed(format!("tags.{k}"), old, v),
            None => crate::plan::FieldChange::added(format!("tags.{k}"), v),
        })
        .collect()
}

/// True when live tags carry this stack's ownership tags, its environment's included: a
/// resource with none of it ([`Owner::Legacy`]) is adopted by name, never swept.
pub(crate) fn is_owned(live: &Tags, desired: &Desired) -> bool {
    desired
        .ownership_tags()
        .iter()
        .all(|(k, v)| live.get(k) == Some(v))
}

impl Provider for AwsProvider {
    type Observed = Observed;
    type Op = Op;

    fn name(&self) -> &'static str {
        NAME
    }

    fn world(&self) -> crate::plan::World {
        crate::plan::World::Aws
    }

    async fn observe(&self, desired: &Desired) -> Result<Observed, ProviderError> {
        self.observe_all(desired).await.map_err(|e| self.fail(e))
    }

    fn diff(&self, desired: &Desired, observed: &Observed) -> ProviderPlan<Op> {
        let mut plan = ProviderPlan::default();
        ec2::diff_groups(desired, observed, &mut plan);
        s3::diff(desired, observed, &mut plan);
        ssm::diff(desired, observed, &mut plan);
        let replaced = ec2::diff_instances(desired, observed, &mut plan);
        elbv2::diff(desired, observed, &replaced, &mut plan);
        diff_roles(desired, observed, &mut plan);
        for step in &mut plan.steps {
            explain_legacy(desired, &mut step.change);
            attribute_cause(desired, &mut step.change);
        }
        plan.steps.sort_by_key(|s| phase(&s.change));
        plan.unobserved = observed.unobserved.clone();
        plan
    }

    async fn apply(
        &self,
        desired: &Desired,
        observed: &Observed,
        steps: Vec<Step<Op>>,
        gate: &dyn WriteGate,
    ) -> Vec<StepOutcome> {
        let ctx = ApplyCtx {
            desired,
            observed,
            resolved: ec2::seed_resolved(desired, observed),
            gate,
        };
        let mut by_phase: BTreeMap<u8, Vec<Step<Op>>> = BTreeMap::new();
        for step in steps {
            by_phase.entry(phase(&step.change)).or_default().push(step);
        }
        let mut outcomes = Vec::new();
        for (_, steps) in by_phase {
            // Steps of one phase are independent of each other: run them concurrently.
            let done = join_all(steps.into_iter().map(|s| self.apply_step(&ctx, s))).await;
            outcomes.extend(done);
        }
        outcomes
    }
}

/// How a resource's live tags differ from its wanted ones: the one tag comparison of every
/// kind.
#[derive(Debug, Default)]
pub(crate) struct TagDrift {
    /// Missing or changed tags: a tag write puts them back.
    pub put: Vec<crate::plan::FieldChange>,
    /// Tags nobody declared, as the plan shows them (a hand-added tag is drift too).
    pub removed: Vec<crate::plan::FieldChange>,
    /// Their keys: a tag removal takes them off.
    pub extra: Vec<String>,
}

impl TagDrift {
    /// Every field change (missing and changed first, then extra), and the extra keys.
    pub(crate) fn into_parts(self) -> (Vec<crate::plan::FieldChange>, Vec<String>) {
        let mut fields = self.put;
        fields.extend(self.removed);
        (fields, self.extra)
    }
}

/// Tags that are missing, differ, or are extra. Keys under `aws:` are AWS's own and cannot be
/// removed: they are left out.
pub(crate) fn tag_drift(want: &Tags, live: &Tags) -> TagDrift {
    let extra: Vec<String> = live
        .keys()
        .filter(|k| !want.contains_key(*k) && !k.starts_with("aws:"))
        .cloned()
        .collect();
    TagDrift {
        put: tag_changes(want, live),
        removed: extra
            .iter()
            .map(|k| {
                crate::plan::FieldChange::removed(
                    format!("tags.{k}"),
                    live.get(k).map(String::as_str).unwrap_or(""),
                )
            })
            .collect(),
        extra,
    }
}

/// Whose a live resource is, by its tags, against this stack's identity (its name and its
/// environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Carries every ownership tag of this stack in this environment.
    Ours,
    /// Carries this stack's tags but no environment tag: written before the environment was
    /// part of a stack's identity. It is this environment's only when found by its
    /// environment-specific name; then it is adopted by adding the tag, never swept.
    Legacy,
    /// Tagged for another stack.
    OtherStack(String),
    /// Tagged for this stack in another environment.
    OtherEnvironment(String),
    /// No stack tag: an adoption candidate when found by name.
    Unmanaged,
}

/// Classifies live tags against the stack's identity.
pub(crate) fn owner(live: &Tags, desired: &Desired) -> Owner {
    use crate::model::ownership::{ENV_TAG, STACK_TAG};
    match (live.get(STACK_TAG), live.get(ENV_TAG)) {
        (None, _) => Owner::Unmanaged,
        (Some(stack), _) if *stack != desired.stack_name => Owner::OtherStack(stack.clone()),
        (Some(_), Some(env)) if *env != desired.environment => Owner::OtherEnvironment(env.clone()),
        (Some(_), None) => Owner::Legacy,
        (Some(_), Some(_)) if is_owned(live, desired) => Owner::Ours,
        // This stack and environment but not ManagedBy: adopted like an untagged one.
        (Some(_), Some(_)) => Owner::Unmanaged,
    }
}

/// The other stack (or this stack's other environment) a live resource is tagged for, if
/// any: such a resource is never adopted, changed or deleted.
pub(crate) fn foreign_owner(live: &Tags, desired: &Desired) -> Option<String> {
    match owner(live, desired) {
        Owner::OtherStack(stack) => Some(stack),
        Owner::OtherEnvironment(env) => Some(format!("{} ({env})", desired.stack_name)),
        Owner::Ours | Owner::Legacy | Owner::Unmanaged => None,
    }
}

/// Fails when a live resource is tagged for another stack or another environment.
pub(crate) fn check_owner(
    resource: impl FnOnce() -> String,
    live: &Tags,
    desired: &Desired,
) -> Result<(), AwsError> {
    match owner(live, desired) {
        Owner::OtherStack(owner) => Err(AwsError::ForeignOwner {
            resource: resource(),
            owner,
        }),
        Owner::OtherEnvironment(env) => Err(AwsError::ForeignEnvironment {
            resource: resource(),
            stack: desired.stack_name.clone(),
            env,
        }),
        Owner::Ours | Owner::Legacy | Owner::Unmanaged => Ok(()),
    }
}

/// Says why a resource from before the environment tag is adopted: the plan shows it as a
/// re-tag of what this stack already owned, not as taking over something foreign. Such an
/// adoption adds the environment tag while the stack tag is already there (an untagged
/// resource's adoption adds both).
fn explain_legacy(desired: &Desired, change: &mut Change) {
    let env_field = format!("tags.{}", crate::model::ownership::ENV_TAG);
    let stack_field = format!("tags.{}", crate::model::ownership::STACK_TAG);
    // A listener rule's fields are prefixed by their listener (`listener:80.tags.…`).
    let is = |path: &str, field: &str| path == field || path.ends_with(&format!(".{field}"));
    let legacy = change.action == Action::Adopt
        && change
            .fields
            .iter()
            .any(|f| is(&f.path, &env_field) && f.old.is_none())
        && !change.fields.iter().any(|f| is(&f.path, &stack_field));
    if !legacy {
        return;
    }
    let why = format!(
        "this stack's, written before the environment was part of its identity: tagged {}={}",
        crate::model::ownership::ENV_TAG,
        desired.environment
    );
    change.reason = Some(match change.reason.take() {
        Some(other) => format!("{why}; {other}"),
        None => why,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: Kind, action: Action) -> Change {
        Change::new(crate::model::ResourceId::new(kind, "x"), action)
    }

    #[test]
    fn a_transfer_gets_a_second_per_mebibyte_on_top_of_every_call_deadline() {
        let small = transfer_timeouts(0);
        assert_eq!(small.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        let image = transfer_timeouts(137 << 20);
        assert_eq!(
            image.operation_attempt_timeout(),
            Some(ATTEMPT_TIMEOUT + Duration::from_secs(137))
        );
        assert_eq!(image.read_timeout(), image.operation_attempt_timeout());
        assert!(image.operation_timeout() > Some((ATTEMPT_TIMEOUT + Duration::from_secs(137)) * 2));
    }

    #[test]
    fn dependents_are_deleted_first_and_built_last() {
        let order = [
            change(Kind::ListenerRule, Action::Delete),
            change(Kind::TargetGroup, Action::Delete),
            change(Kind::Instance, Action::Delete),
            change(Kind::SecurityGroup, Action::Create),
            change(Kind::Instance, Action::Create),
            change(Kind::TargetGroup, Action::Update),
            change(Kind::ListenerRule, Action::Create),
        ];
        let phases: Vec<u8> = order.iter().map(phase).collect();
        assert!(phases.windows(2).all(|w| w[0] < w[1]), "{phases:?}");
    }

    fn desired_with_group(spec_tags: &str) -> Desired {
        let mut desired = crate::manifest::load(std::path::Path::new("manifests"), Some("local"))
            .expect("the shipped manifests load")
            .desired;
        for r in &mut desired.resources {
            if let crate::model::Spec::SecurityGroup(g) = &mut r.spec {
                g.tags.insert("team".into(), spec_tags.into());
            }
        }
        desired
    }

    #[test]
    fn ownership_is_the_stack_and_its_environment_and_a_missing_env_tag_is_legacy() {
        let desired = desired_with_group("a");
        let tags = |pairs: &[(&str, &str)]| -> Tags {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (m, s, e) = (
            crate::model::ownership::MANAGED_BY_TAG,
            crate::model::ownership::STACK_TAG,
            crate::model::ownership::ENV_TAG,
        );
        let ours = tags(&[(m, "stackwarden"), (s, "observability"), (e, "local")]);
        assert_eq!(owner(&ours, &desired), Owner::Ours);
        assert!(is_owned(&ours, &desired));
        let prod = tags(&[(m, "stackwarden"), (s, "observability"), (e, "prod")]);
        assert_eq!(
            owner(&prod, &desired),
            Owner::OtherEnvironment("prod".into())
        );
        assert!(!is_owned(&prod, &desired));
        assert!(matches!(
            check_owner(|| "TargetGroup/faro".into(), &prod, &desired),
            Err(AwsError::ForeignEnvironment { env, .. }) if env == "prod"
        ));
        let legacy = tags(&[(m, "stackwarden"), (s, "observability")]);
        assert_eq!(owner(&legacy, &desired), Owner::Legacy);
        assert!(
            !is_owned(&legacy, &desired),
            "a legacy resource is never swept"
        );
        assert!(check_owner(|| "x".into(), &legacy, &desired).is_ok());
        let other = tags(&[(m, "stackwarden"), (s, "billing"), (e, "local")]);
        assert_eq!(owner(&other, &desired), Owner::OtherStack("billing".into()));
        assert_eq!(owner(&Tags::new(), &desired), Owner::Unmanaged);
    }

    #[test]
    fn an_update_that_rewrites_the_spec_hash_is_the_manifests_one_that_keeps_it_is_drift() {
        let desired = desired_with_group("a");
        let (r, g) = desired.security_groups().next().expect("a group");
        let want = desired_tags(&desired, &r.id, &g.tags);
        let hash = want
            .get(SPEC_HASH_TAG)
            .expect("the hash is desired")
            .clone();
        assert_eq!(hash, r.spec_hash());

        // Live carries today's hash, a rule was revoked: drift.
        let mut revoked = Change::new(r.id.clone(), Action::Update).with_fields(vec![
            crate::plan::FieldChange::added("ingress[tcp/22 10.0.0.0/8]", "ssh"),
        ]);
        attribute_cause(&desired, &mut revoked);
        assert_eq!(revoked.cause, Cause::Drift);

        // Live carries an older hash: the manifest changed.
        let mut live = want.clone();
        live.insert(SPEC_HASH_TAG.into(), "0123456789abcdef".into());
        let mut edited =
            Change::new(r.id.clone(), Action::Update).with_fields(tag_changes(&want, &live));
        attribute_cause(&desired, &mut edited);
        assert_eq!(edited.cause, Cause::Manifest);

        // Live carries no hash at all (a copy launched by hand): drift.
        let mut unrecorded = want.clone();
        unrecorded.remove(SPEC_HASH_TAG);
        let mut copy =
            Change::new(r.id.clone(), Action::Update).with_fields(tag_changes(&want, &unrecorded));
        attribute_cause(&desired, &mut copy);
        assert_eq!(copy.cause, Cause::Drift);

        // Another spec has another hash.
        let other = desired_with_group("b");
        let (r2, _) = other.security_groups().next().expect("a group");
        assert_ne!(r2.spec_hash(), hash);
    }

    #[test]
    fn creates_are_missing_and_replacements_the_manifests() {
        let desired = desired_with_group("a");
        let id = desired
            .security_groups()
            .next()
            .expect("a group")
            .0
            .id
            .clone();
        for (action, cause) in [
            (Action::Create, Cause::Missing),
            (Action::Replace, Cause::Manifest),
            (Action::Delete, Cause::Drift),
        ] {
            let mut c = Change::new(id.clone(), action);
            attribute_cause(&desired, &mut c);
            assert_eq!(c.cause, cause, "{action:?}");
        }
    }

    #[test]
    fn extra_tags_are_drift_except_aws_own() {
        let want: Tags = [("ManagedBy".to_string(), "stackwarden".to_string())].into();
        let mut live = want.clone();
        live.insert("owner".into(), "bob".into());
        live.insert("aws:cloudformation:stack-name".into(), "x".into());
        // A key in stackwarden's own namespace that nobody declared was added by hand too.
        live.insert("stackwarden:note".into(), "y".into());
        let drift = tag_drift(&want, &live);
        assert!(drift.put.is_empty(), "{:?}", drift.put);
        let (fields, extra) = drift.into_parts();
        assert_eq!(
            extra,
            vec!["owner".to_string(), "stackwarden:note".to_string()]
        );
        let paths: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["tags.owner", "tags.stackwarden:note"]);
    }
}
