//! Keeping a running service in the registry: register on start, re-register on an
//! interval (so the TTL never lapses while the process lives), deregister on stop.

use super::{RegistryError, Service, SharedRegistry};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A service's registration, alive until [`Registration::stop`] or until dropped
/// (which stops the heartbeat at once and deregisters in the background).
pub(crate) struct Registration {
    registry: SharedRegistry,
    service: Service,
    heartbeat: JoinHandle<()>,
    /// Set once deregistered, so dropping does not deregister again.
    stopped: bool,
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
            stopped: false,
        })
    }

    /// The registered record.
    pub(crate) fn service(&self) -> &Service {
        &self.service
    }

    /// Stops the heartbeat and removes the record.
    pub(crate) async fn stop(mut self) {
        self.heartbeat.abort();
        self.stopped = true;
        deregister(&self.registry, &self.service).await;
    }
}

async fn deregister(registry: &SharedRegistry, service: &Service) {
    if let Err(err) = registry.deregister(service).await {
        tracing::warn!(service = %service.name, error = %err, "deregistration failed; the record expires with its TTL");
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.stopped {
            return;
        }
        // No zombie node: callers must stop being routed here. Without a runtime
        // (the process is ending) the record expires with its TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (registry, service) = (self.registry.clone(), self.service.clone());
            runtime.spawn(async move { deregister(&registry, &service).await });
        }
    }
}
