//! ELBv2: the target group (health check, attributes, targets) and the listener rules on the
//! looked-up ALB, observed together. As `host/` is: [`live`] holds the observed types,
//! [`observe`] the SDK reads, [`diff`] the pure comparison with its table tests, [`apply`]
//! the SDK writes. The ALB and its listeners are lookups: read, never written.

mod apply;
mod diff;
mod live;
mod observe;

pub use apply::{apply_rule, apply_target_group};
pub use diff::{check_owners, diff};
pub use live::ElbObserved;
pub use observe::observe;

use crate::model::Desired;

/// The attribute holding the deregistration delay.
const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";
/// DescribeTags takes at most 20 ARNs per call.
const TAGS_PER_CALL: usize = 20;
/// What the target group's attributes must be besides the deregistration delay: AWS's
/// defaults for an instance target group behind an ALB. A person changing one by hand is
/// drift. A key the endpoint does not return is not compared (older APIs, moto).
const DEFAULT_ATTRIBUTES: &[(&str, &str)] = &[
    ("stickiness.enabled", "false"),
    ("stickiness.type", "lb_cookie"),
    ("stickiness.lb_cookie.duration_seconds", "86400"),
    ("stickiness.app_cookie.cookie_name", ""),
    ("stickiness.app_cookie.duration_seconds", "86400"),
    ("load_balancing.algorithm.type", "round_robin"),
    ("load_balancing.algorithm.anomaly_mitigation", "off"),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
    ),
    ("slow_start.duration_seconds", "0"),
    ("waf.fail_open.enabled", "false"),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
    ),
];
/// Fixed when a target group is created; anything else means it was re-created by hand.
const TARGET_TYPE: &str = "instance";
/// See [`TARGET_TYPE`].
const PROTOCOL_VERSION: &str = "HTTP1";
/// See [`TARGET_TYPE`].
const IP_ADDRESS_TYPE: &str = "ipv4";

/// Target group writes.
#[derive(Debug)]
pub enum TargetGroupOp {
    /// Create it (with tags).
    Create {
        /// TargetGroup manifest name.
        name: String,
    },
    /// Delete it.
    Delete {
        /// ARN.
        arn: String,
    },
    /// Set the health check.
    HealthCheck {
        /// TargetGroup manifest name.
        name: String,
    },
    /// Set attributes to their desired values.
    Attributes {
        /// TargetGroup manifest name.
        name: String,
        /// The attribute keys to set.
        keys: Vec<String>,
    },
    /// Remove tags nobody declared.
    Untag {
        /// TargetGroup manifest name.
        name: String,
        /// Tag keys.
        keys: Vec<String>,
    },
    /// Put the desired tags.
    Tag {
        /// TargetGroup manifest name.
        name: String,
    },
    /// Register an instance.
    Register {
        /// TargetGroup manifest name.
        name: String,
        /// Instance manifest name.
        instance: String,
        /// Port.
        port: u16,
    },
    /// Deregister a target.
    Deregister {
        /// TargetGroup manifest name.
        name: String,
        /// Instance id.
        id: String,
        /// Port.
        port: i32,
    },
}

/// Listener rule writes.
#[derive(Debug)]
pub enum ListenerRuleOp {
    /// Create the rule on a listener.
    Create {
        /// Listener ARN.
        listener: String,
    },
    /// Set conditions and actions.
    Modify {
        /// Rule ARN.
        rule: String,
    },
    /// Put the desired tags.
    Tag {
        /// Rule ARN.
        rule: String,
    },
    /// Remove tags nobody declared.
    Untag {
        /// Rule ARN.
        rule: String,
        /// Tag keys.
        keys: Vec<String>,
    },
    /// Delete a rule.
    Delete {
        /// Rule ARN.
        rule: String,
    },
}

/// The name inside a load balancer or target group ARN (`…:loadbalancer/app/<name>/<id>`,
/// `…:targetgroup/<name>/<id>`).
pub fn name_in_arn(arn: &str) -> &str {
    let parts: Vec<&str> = arn.split('/').collect();
    match parts.as_slice() {
        [_, "app" | "net", name, _] => name,
        [_, name, _] => name,
        _ => arn,
    }
}

fn tg_name_of<'a>(desired: &'a Desired, manifest: &str) -> &'a str {
    desired
        .target_groups()
        .find(|(r, _)| r.id.name == manifest)
        .map(|(_, s)| s.name.as_str())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_arns() {
        assert_eq!(
            name_in_arn(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/durable-code-local-alb/50dc6c495c0c9188"
            ),
            "durable-code-local-alb"
        );
        assert_eq!(
            name_in_arn(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/durable-code-local-faro-tg/6d0ecf831eec9f09"
            ),
            "durable-code-local-faro-tg"
        );
    }
}
