//! An SDK interceptor that counts every HTTP attempt by service and operation into [`Stats`]
//! (`--stats`). It observes only: it never changes a request.

use crate::provider::{CallKind, Stats};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::Arc;

/// Counts calls; one instance is shared by every service client of a provider.
#[derive(Debug, Clone)]
pub struct CallCounter {
    stats: Arc<Stats>,
}

impl CallCounter {
    /// A counter writing into `stats`.
    pub fn new(stats: Arc<Stats>) -> Self {
        CallCounter { stats }
    }
}

/// Service names as `--stats` prints them (the SDK's are e.g. "Elastic Load Balancing v2").
fn short_service(service: &str) -> String {
    match service {
        "Elastic Load Balancing v2" => "elbv2".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "stackwarden-call-counter"
    }

    // Before transmit runs once per HTTP attempt, so retries are counted: the budget is about
    // requests the API sees, not about calls in our code.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            let op = meta.name();
            self.stats.record(
                &short_service(meta.service()),
                op,
                CallKind::of_operation(op),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_short_and_lowercase() {
        assert_eq!(short_service("Elastic Load Balancing v2"), "elbv2");
        assert_eq!(short_service("EC2"), "ec2");
        assert_eq!(short_service("S3"), "s3");
    }
}
