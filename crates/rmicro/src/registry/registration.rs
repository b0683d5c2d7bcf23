//! Keeping a running service in the registry: register on start, re-register on an
//! interval (so the TTL never lapses while the process lives), deregister on stop.

use super::{RegistryError, Service, SharedRegistry};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A service's registration, alive until [`Registration::stop`].
pub(crate) struct Registration {
    registry: SharedRegistry,
    service: Service,
    heartbeat: JoinHandle<()>,
}

impl Registration {
    /// Registers `service` now (failing if the registry refuses) and keeps it fresh.
    pub(crate) async fn start(
        registry: SharedRegistry,
        service: Service,
        ttl: Duration,
        interval: Duration,
    ) -> Result<Self, RegistryError> {
        registry.register(&service, ttl).await?;
        let heartbeat = {
            let (registry, service) = (registry.clone(), service.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    if let Err(err) = registry.register(&service, ttl).await {
                        // Keep trying: the registry may be restarting; the TTL covers us meanwhile.
                        tracing::warn!(service = %service.name, error = %err, "re-registration failed; will retry");
                    }
                }
            })
        };
        Ok(Registration {
            registry,
            service,
            heartbeat,
        })
    }

    /// The registered record.
    pub(crate) fn service(&self) -> &Service {
        &self.service
    }

    /// Stops the heartbeat and removes the record.
    pub(crate) async fn stop(self) {
        self.heartbeat.abort();
        if let Err(err) = self.registry.deregister(&self.service).await {
            tracing::warn!(service = %self.service.name, error = %err, "deregistration failed; the record expires with its TTL");
        }
    }
}
