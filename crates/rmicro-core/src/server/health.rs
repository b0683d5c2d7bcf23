//! What a node reports on gRPC health (`grpc.health.v1.Health`) while it runs.

use std::sync::Arc;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A service's own say in its gRPC health: a handler whose database is down sets
/// it to not serving, so load balancers, Kubernetes probes and `rmicro health`
/// stop picking the node until it recovers, while its calls still answer (with
/// `UNAVAILABLE`). Cheap to clone; every clone steers the same status.
///
/// While the server runs, the status follows the last [`Health::set_serving`]; a
/// server that is stopping reports `NOT_SERVING` whatever was set.
///
/// ```no_run
/// # async fn demo(service: rmicro::Service) {
/// let health = service.health();
/// health.set_serving(false); // reported by every service of the node, and by ""
/// assert!(!health.is_serving());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Health {
    serving: Arc<watch::Sender<bool>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            serving: Arc::new(watch::Sender::new(true)),
        }
    }
}

impl Health {
    /// Reports `SERVING` (`true`) or `NOT_SERVING` (`false`) from now on; setting
    /// what is already set changes nothing.
    pub fn set_serving(&self, serving: bool) {
        self.serving.send_if_modified(|now| {
            let changed = *now != serving;
            *now = serving;
            changed
        });
    }

    /// What was last set (`true` at first).
    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Keeps `reporter`'s statuses for `services` (and the whole server, `""`) in
    /// step with this handle until the returned task is aborted.
    pub(crate) fn follow(
        &self,
        reporter: HealthReporter,
        services: Vec<&'static str>,
    ) -> tokio::task::JoinHandle<()> {
        let mut changes = self.serving.subscribe();
        tokio::spawn(async move {
            loop {
                let status = if *changes.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in services.iter().copied().chain([""]) {
                    reporter.set_service_status(name, status).await;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
