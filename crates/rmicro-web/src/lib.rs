//! `rmicro web`: a fleet on one page.
//!
//! micro v3 had `micro web` (services, nodes, endpoints, a call form); the seed ran a
//! Hystrix dashboard, the Prometheus UI and Jaeger beside it to see its fleet. This
//! dashboard puts what an operator looks at first on one server-rendered page,
//! updated live over Server-Sent Events while it is open:
//!
//! - **services** (`/`): name, versions, nodes, each node's gRPC health, and — when
//!   nodes serve `/metrics` (`--metrics-address`, found through the node's
//!   `metrics` metadata) — requests per second, error %, p50 and p99;
//! - **a service** (`/services/NAME`): its nodes (id, address, version, metadata,
//!   health), a chart of the last minutes' numbers, its circuits, its endpoints
//!   with their request and response field trees and a call form each (the
//!   request pre-filled from the descriptor; the reply or the error's `id`, `code`
//!   and `detail`, and the latency), and the topics it subscribes to;
//! - **topics** (`/topics`): every broker topic with its subscribers and queue
//!   groups, and — given a broker ([`Options::broker`]) — a form that publishes a
//!   JSON message on a topic;
//! - **circuits** (`/circuits`): every circuit breaker the fleet's Hystrix streams
//!   report (node metadata `hystrix`, or `--hystrix-stream URL`), open or closed,
//!   with a chart of its error % and open spells.
//!
//! Everything shown is escaped by the templates (minijinja's HTML auto-escaping),
//! the pages load no asset from elsewhere (the CSS and the small script are served
//! by the binary, under a `Content-Security-Policy` that forbids inline scripts),
//! and access can need HTTP basic auth or the auth issue's bearer tokens.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = rmicro::registry::from_flags("local", None)?;
//! let dashboard = rmicro_web::Dashboard::start(rmicro_web::Options::default(), registry)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8082").await?;
//! dashboard.serve(listener).await?;
//! # Ok(())
//! # }
//! ```

mod access;
mod call;
mod fleet;
mod fragments;
mod hystrix;
mod pages;
mod scrape;
mod server;

pub use access::Access;
pub use server::{Dashboard, StartError};

use std::time::Duration;

/// How the dashboard watches the fleet and who may see it.
#[derive(Clone)]
pub struct Options {
    /// How often every node's gRPC health is asked.
    pub health_interval: Duration,
    /// How often nodes' `/metrics` are read.
    pub scrape_interval: Duration,
    /// How far back the charts reach.
    pub history: Duration,
    /// Hystrix streams to read besides those nodes advertise (`http://host:port/hystrix.stream`).
    pub hystrix_streams: Vec<String>,
    /// How long a call from the call form may take.
    pub call_timeout: Duration,
    /// Who may see the pages and call through the form.
    pub access: Access,
    /// The broker the topics page's publish form sends through (none: no form).
    pub broker: Option<rmicro::broker::SharedBroker>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            health_interval: Duration::from_secs(2),
            scrape_interval: Duration::from_secs(5),
            history: Duration::from_secs(10 * 60),
            hystrix_streams: Vec::new(),
            call_timeout: Duration::from_secs(10),
            access: Access::open(),
            broker: None,
        }
    }
}

/// The prefix of the registry records the HTTP broker keeps for its subscribers:
/// shown as topics, not as services.
const BROKER_PREFIX: &str = rmicro::broker::HTTP_BROKER_PREFIX;

/// A spawned task that ends when this handle is dropped.
#[derive(Debug)]
pub(crate) struct Task(tokio::task::JoinHandle<()>);

impl Task {
    /// Spawns `future` on the current runtime.
    pub(crate) fn spawn(future: impl std::future::Future<Output = ()> + Send + 'static) -> Task {
        Task(tokio::spawn(future))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}
