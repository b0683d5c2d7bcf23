//! What a node reports on gRPC health (`grpc.health.v1.Health`) while it runs.

use std::sync::Arc;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The gRPC health service name that reports `SERVING` while the process serves,
/// whatever [`Health::set_serving`] says: for liveness probes (Kubernetes'
/// `grpc: {port, service: liveness}`), so a node whose database is down leaves
/// the rotation (readiness asks `""`) without being restarted.
pub const LIVENESS: &str = "liveness";

/// A service's own say in its gRPC health: a handler whose database is down sets
/// it to not serving, so load balancers, Kubernetes probes and `rmicro health`
/// stop picking the node until it recovers, while its calls still answer (with
/// `UNAVAILABLE`). Cheap to clone; every clone steers the same status.
///
/// While the server runs, the status of every service of the node and of the
/// whole server (`""`) follows the last [`Health::set_serving`]; a server that is
/// stopping reports `NOT_SERVING` whatever was set. [`LIVENESS`] is not steered.
///
/// ```no_run
/// # extern crate rmicro_core as rmicro;
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

/// Asks the node listening on `address` (`0.0.0.0`/`[::]` meaning this host)
/// for its whole-server gRPC health, within 3 s: whether it is SERVING, and
/// what it said as a sentence. Runs on a thread of its own, so it can be asked
/// from inside or outside a runtime.
pub(crate) fn probe(address: &str) -> (bool, String) {
    let address = match local_address(address) {
        Ok(address) => address,
        Err(why) => return (false, why),
    };
    let asked = address.clone();
    let answer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let client = crate::Client::new(crate::client::ClientOptions::default());
            let options = crate::client::CallOptions::new()
                .timeout(std::time::Duration::from_secs(3))
                .retries(0);
            Ok::<_, String>(client.check_health(&asked, "", options).await)
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the health check panicked".to_owned()));
    match answer {
        Ok(answer) if answer.status == crate::client::HealthStatus::Unreachable => (
            false,
            format!("{address}: no health answer: {}", answer.detail),
        ),
        Ok(answer) => (
            answer.status == crate::client::HealthStatus::Serving,
            format!("{address}: {}", answer.status),
        ),
        Err(why) => (false, format!("{address}: no health answer: {why}")),
    }
}

/// The address to ask on this host for a node listening on `address`.
fn local_address(address: &str) -> Result<String, String> {
    let needs_port = || {
        format!(
            "--health-check needs the node's port: `{address}` has none (set --server-address or MICRO_SERVER_ADDRESS)"
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(needs_port)?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(needs_port());
    }
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        other => other,
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::local_address;

    #[test]
    fn the_probe_asks_this_host_on_the_nodes_port() {
        assert_eq!(
            local_address("0.0.0.0:50051").as_deref(),
            Ok("127.0.0.1:50051")
        );
        assert_eq!(local_address("[::]:7").as_deref(), Ok("[::1]:7"));
        assert_eq!(local_address("10.0.0.5:9").as_deref(), Ok("10.0.0.5:9"));
        for portless in ["0.0.0.0:0", "localhost", "host:x"] {
            let why = local_address(portless).expect_err(portless);
            assert!(why.contains("needs the node's port"), "{why}");
        }
    }
}
