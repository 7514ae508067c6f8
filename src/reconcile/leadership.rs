//! Who writes: taking, renewing and losing the stack's lease, as the loop's state records it.
//! The pure rule of what a pass may do with a given lease is `decide::acting`; this is the
//! part that talks to the lease object.

use super::Controller;
use super::decide::Acting;
use super::lease::{Holding, Lease, LeaseScope};
use crate::model::Desired;
use crate::status::{LeaseStatus, Role, Timestamp};
use std::time::SystemTime;

impl Controller {
    /// Points the lease at the stack's bucket (named only once `${account}` is known; a
    /// renamed bucket moves the lease with it).
    pub(super) fn ensure_lease(&mut self, desired: &Desired) {
        if !self.opts.scope.aws() {
            return;
        }
        let s3 = self.aws.as_ref().and_then(|w| w.s3.as_ref());
        let (Some(s3), Some((_, bucket))) = (s3, desired.buckets().next()) else {
            return;
        };
        let key_matches = self
            .lease
            .as_ref()
            .is_some_and(|l| l.bucket() == bucket.name);
        // A daemon that never writes AWS holds the host's lease only: CI's AWS apply, the
        // AWS world's writer, must not wait for it (one writer per world).
        let scope = match self.opts.aws_mode {
            Some(m) if !m.repairs() => LeaseScope::Host,
            _ => LeaseScope::Aws,
        };
        if !key_matches {
            self.lease = Some(Lease::new(
                s3.clone(),
                bucket.name.clone(),
                &desired.stack_name,
                &desired.environment,
                scope,
                self.identity.clone(),
                self.opts.lease_ttl,
            ));
        }
    }

    /// Renews or checks the lease between passes; true when this daemon just took it over.
    pub(super) async fn lease_tick(&mut self) -> bool {
        let observing = self
            .state
            .desired
            .as_ref()
            .is_some_and(|d| !d.stack.mode.repairs());
        if self.lease.is_none() || observing {
            return false;
        }
        let was_leader = self.state.lease.role == Role::Leader;
        let acting = self.lease_step().await;
        self.publish();
        acting == Acting::Full && !was_leader
    }

    /// A write found the lease gone or taken: stand by (no later pass writes on the old
    /// holding). The next lease tick looks again, and acts at once if it retakes it.
    pub(super) fn lease_lost(&mut self, why: &str) {
        tracing::warn!(reason = %why, "lease lost mid-pass: standing by until it is retaken");
        self.state.stand_by();
    }

    /// Takes or renews the lease; says what this pass may do.
    pub(super) async fn lease_step(&mut self) -> Acting {
        if self.handoff.handing_off {
            // Given up to a successor: never taken back while this container is stopped.
            self.state.stand_by();
            return Acting::Standby;
        }
        let Some(lease) = &self.lease else {
            // Host-only daemons (on the instance, no AWS in scope) have no bucket to hold a
            // lease in: one daemon per host is the deployment's guarantee.
            self.state.lease = LeaseStatus {
                role: Role::Leader,
                holder: Some(self.identity.clone()),
                expires: None,
            };
            return Acting::Full;
        };
        match lease.acquire(SystemTime::now()).await {
            Ok(Holding::Held { expires }) => {
                if self.state.lease.role != Role::Leader {
                    tracing::info!(holder = lease.identity(), "lease taken: this daemon acts");
                }
                self.state.lease = LeaseStatus {
                    role: Role::Leader,
                    holder: Some(lease.identity().to_string()),
                    expires: Some(Timestamp(expires)),
                };
                Acting::Full
            }
            Ok(Holding::Other { holder, expires }) => {
                if self.state.lease.role != Role::Standby {
                    tracing::info!(%holder, "another actor holds the lease: standing by");
                }
                self.state.lease = LeaseStatus {
                    role: Role::Standby,
                    holder: Some(holder),
                    expires: Some(Timestamp(expires)),
                };
                Acting::Standby
            }
            Ok(Holding::NoBucket) => {
                self.state.lease = LeaseStatus::default();
                Acting::BucketOnly
            }
            Err(e) if self.state.holds_unexpired_lease(SystemTime::now()) => {
                // Ours until its expiry, whatever S3 answers now.
                tracing::warn!(error = %e, "lease renewal failed; acting until it expires");
                Acting::Full
            }
            Err(e) => {
                // Without knowing who holds the lease, acting could make two actors.
                tracing::warn!(error = %e, "lease unknown: observing only");
                self.state.lease = LeaseStatus {
                    role: Role::Standby,
                    holder: None,
                    expires: None,
                };
                Acting::Standby
            }
        }
    }
}
