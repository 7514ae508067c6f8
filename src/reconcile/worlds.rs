//! Connecting the worlds a pass looks at: AWS and the host's Docker engine. The daemon and the
//! CLI connect through this one place, and the loop sees a world only as a [`DynProvider`]
//! plus the few facts it needs besides (the account, the lease's bucket client, the Docker
//! event stream). [`Connect`] is the seam: [`Live`] reaches the real APIs; a test may plug in
//! its own providers to drive the loop's logic.

use crate::provider::aws::{self, AwsProvider};
use crate::provider::host::HostProvider;
use crate::provider::host::events::{HostEvent, WatchedNames, watch_events};
use crate::provider::host::handoff::SelfUpdate;
use crate::provider::{DynProvider, ProviderError, Stats};
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Finds the AWS account of the credentials in use (what `${account}` stands for).
pub trait Account: Send + Sync {
    /// The account id, or why it could not be found.
    fn account_id(&self) -> BoxFuture<'_, Result<String, ProviderError>>;
}

impl Account for AwsProvider {
    fn account_id(&self) -> BoxFuture<'_, Result<String, ProviderError>> {
        Box::pin(AwsProvider::account_id(self))
    }
}

/// The AWS world, connected.
pub struct AwsWorld {
    /// Observes, diffs and applies the AWS kinds.
    pub provider: Arc<dyn DynProvider>,
    /// Resolves `${account}`.
    pub account: Arc<dyn Account>,
    /// The client the stack's lease lives behind; `None` when this world has no bucket to
    /// hold one in (a daemon without it acts alone, as a host-only daemon does).
    pub s3: Option<aws_sdk_s3::Client>,
}

/// The host world, connected.
pub struct HostWorld {
    /// Observes, diffs and applies the host kinds.
    pub provider: Arc<dyn DynProvider>,
    /// Container events of the stack and of the names it declares, when asked for.
    pub events: Option<mpsc::Receiver<HostEvent>>,
    /// The daemon's own container, as the host's apply hands it over (`None` where a test
    /// plugs in a world of its own).
    pub self_update: Option<Arc<SelfUpdate>>,
}

/// What the events watcher follows: the stack's containers and any holder of a declared name.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The stack's name (its containers carry it in a label).
    pub stack: String,
    /// The declared container names, kept current by the loop.
    pub names: WatchedNames,
}

/// Connects worlds.
pub trait Connect: Send + Sync {
    /// The AWS world of `region`, counting calls into `stats`. Connecting makes no call: an
    /// unreachable AWS shows at the first one.
    fn aws<'a>(&'a self, region: &'a str, stats: Arc<Stats>) -> BoxFuture<'a, AwsWorld>;

    /// The host world whose files live under `root`, counting calls into `stats`; with
    /// `watch`, its Docker events too.
    fn host<'a>(
        &'a self,
        root: PathBuf,
        stats: Arc<Stats>,
        watch: Option<Watch>,
    ) -> BoxFuture<'a, Result<HostWorld, ProviderError>>;

    /// An S3 client in `region`, for the source and the status snapshot (their bucket is
    /// known before any manifest is).
    fn s3<'a>(&'a self, region: &'a str) -> BoxFuture<'a, aws_sdk_s3::Client>;
}

/// The real worlds: the AWS SDK with the default credential chain, and the Docker engine at
/// `DOCKER_HOST` (or the default socket).
#[derive(Debug, Clone, Copy, Default)]
pub struct Live;

impl Connect for Live {
    fn aws<'a>(&'a self, region: &'a str, stats: Arc<Stats>) -> BoxFuture<'a, AwsWorld> {
        Box::pin(async move {
            let config = aws::sdk_config(region).await;
            let provider = Arc::new(AwsProvider::new(&config, stats));
            AwsWorld {
                provider: provider.clone(),
                account: provider,
                s3: Some(aws::s3_client(&config)),
            }
        })
    }

    fn host<'a>(
        &'a self,
        root: PathBuf,
        stats: Arc<Stats>,
        watch: Option<Watch>,
    ) -> BoxFuture<'a, Result<HostWorld, ProviderError>> {
        Box::pin(async move {
            let provider = HostProvider::connect(root, stats).await?;
            // The watcher's subscriptions are not part of any pass's calls.
            let events = watch.map(|w| {
                watch_events(
                    provider.docker().clone(),
                    w.stack,
                    w.names,
                    Arc::new(Stats::default()),
                )
            });
            Ok(HostWorld {
                self_update: Some(provider.self_update()),
                provider: Arc::new(provider),
                events,
            })
        })
    }

    fn s3<'a>(&'a self, region: &'a str) -> BoxFuture<'a, aws_sdk_s3::Client> {
        Box::pin(async move { aws::s3_client(&aws::sdk_config(region).await) })
    }
}
