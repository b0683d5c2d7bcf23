//! The server: routes gRPC calls to handlers, serves health and reflection, and shuts
//! down gracefully.
//!
//! A [`crate::Service`] owns one server. Generated `*Server` types implement
//! [`ServiceHandler`] and are added with the builder's `.handle(..)`. Besides them every server
//! answers `grpc.health.v1.Health` (one status per gRPC service and `""` for the whole
//! server, all `NOT_SERVING` once shutdown starts) and server reflection v1 and
//! v1alpha, so `grpcurl` can list and describe it with no `.proto` at hand.

pub mod dispatch;
mod handler;
pub(crate) mod health;
mod request;
pub(crate) mod router;
mod stream;

pub use crate::service::shutdown_signal;
pub use handler::{MethodDescriptor, MethodKind, ServiceDescriptor, ServiceHandler};
pub use health::{Health, LIVENESS};
pub use request::Request;
pub use router::HandlerStack;
pub use stream::{RequestStream, ResponseSender};

use crate::transport::{ConnectionLimits, ServerTls, TlsError};

use router::{Dispatch, Router, Routes};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The service name, as callers and the registry know it.
    pub name: String,
    /// Where to listen; port 0 picks a free port.
    pub address: String,
    /// The address others should dial; `None` means the bound address.
    pub advertise: Option<String>,
    /// Largest message accepted or sent, in bytes.
    pub max_message_size: usize,
    /// How long shutdown waits for in-flight calls.
    pub grace_period: Duration,
    /// TLS identity; `None` serves plain h2c.
    pub tls: Option<ServerTls>,
    /// What the listener lets its clients hold (connections, streams, header
    /// bytes, handshake and idle time).
    pub limits: ConnectionLimits,
    /// Whether server reflection (v1 and v1alpha) is served: it tells anyone who
    /// can connect every service, method and message of the server. On by default
    /// (grpcurl, `rmicro describe`, the gateway's reflection routes need it).
    pub reflection: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            name: "rmicro".into(),
            address: "127.0.0.1:0".into(),
            advertise: None,
            max_message_size: 4 * 1024 * 1024,
            grace_period: Duration::from_secs(30),
            tls: None,
            limits: ConnectionLimits::default(),
            reflection: true,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on `{address}`: {source}; pick a free port or use port 0")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files are missing or invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The reflection service could not load the descriptors.
    #[error("cannot build server reflection from the generated descriptors: {0}")]
    Reflection(String),
    /// The service could not register itself.
    #[error("cannot register in the registry: {0}")]
    Register(#[from] crate::registry::RegistryError),
    /// No handler was added.
    #[error("service `{0}` has no handlers: add one with the builder's `.handle(..)`")]
    NoHandlers(String),
    /// The `--auth-*` flags could not make a token verifier (a key file missing or
    /// unreadable, a JWKS that cannot be fetched).
    #[error("{0}")]
    Auth(String),
    /// A handler was added after the server started.
    #[error(
        "service `{service}` is already serving: add `{handler}` with the builder's `.handle(..)` or before `start()`"
    )]
    AlreadyStarted {
        /// The service.
        service: String,
        /// The gRPC service that came too late.
        handler: &'static str,
    },
    /// The configuration could not be loaded.
    #[error("cannot load the configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Serves one of the engine's own gRPC services (health, reflection) on rmicro's body.
fn engine_service<S>(service: S) -> HandlerStack
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    HandlerStack::new(
        tower::ServiceBuilder::new()
            .map_request(|r: http::Request<crate::transport::Body>| {
                r.map(crate::transport::Body::into_engine)
            })
            .map_response(|r: http::Response<tonic::body::Body>| {
                r.map(crate::transport::Body::from_engine)
            })
            .service(service),
    )
}

/// Builds the routes, health and reflection for `handlers`, wrapped in `wrappers`
/// (the first is the outermost).
pub(crate) async fn build_router(
    options: &ServerOptions,
    handlers: &[Arc<dyn ServiceHandler>],
    wrappers: &[crate::wrapper::stack::HandlerWrap],
) -> Result<(Router, HealthReporter), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut builtin: HashMap<String, HandlerStack> = HashMap::new();
    builtin.insert(
        "grpc.health.v1.Health".into(),
        engine_service(health_service),
    );
    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut seen = std::collections::HashSet::new();
    for h in handlers {
        let desc = h.descriptor();
        health
            .set_service_status(desc.name, ServingStatus::Serving)
            .await;
        if seen.insert(desc.file_descriptor_set.as_ptr()) {
            v1 = v1.register_encoded_file_descriptor_set(desc.file_descriptor_set);
            v1alpha = v1alpha.register_encoded_file_descriptor_set(desc.file_descriptor_set);
        }
    }
    health.set_service_status("", ServingStatus::Serving).await;
    // Serving while the process serves, whatever the service says of itself:
    // what a liveness probe asks (a database outage is for readiness).
    health
        .set_service_status(health::LIVENESS, ServingStatus::Serving)
        .await;
    let v1 = v1
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let v1alpha = v1alpha
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    if options.reflection {
        builtin.insert(
            "grpc.reflection.v1.ServerReflection".into(),
            engine_service(v1),
        );
        builtin.insert(
            "grpc.reflection.v1alpha.ServerReflection".into(),
            engine_service(v1alpha),
        );
    }
    let routes = Arc::new(Routes::new(
        &options.name,
        handlers,
        builtin,
        options.max_message_size,
    ));
    let dispatch = Dispatch::new(routes.clone());
    // Function wrappers only: a chain straight over the handlers; otherwise a stack.
    let fns = crate::wrapper::stack::only_fns(wrappers).filter(|fns| !fns.is_empty());
    let stack = (fns.is_none() && !wrappers.is_empty())
        .then(|| crate::wrapper::stack::apply(HandlerStack::new(dispatch.clone()), wrappers));
    Ok((
        Router {
            routes,
            dispatch,
            fns,
            stack,
            peer: None,
        },
        health,
    ))
}

/// A server that is listening. [`RunningServer::stop`] shuts it down gracefully and
/// waits; dropping it does the same in the background (deregisters at once, stops
/// accepting, drains within the grace period), so no node outlives its handle.
pub struct RunningServer {
    address: SocketAddr,
    advertise: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<bool>,
    health: HealthReporter,
    services: Vec<&'static str>,
    /// Keeps the reported statuses in step with the service's [`Health`].
    follower: tokio::task::JoinHandle<()>,
    in_flight: Arc<AtomicUsize>,
    registration: Option<crate::registry::Registration>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("address", &self.address)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// Binds and starts serving `router`.
    pub(crate) async fn start(
        options: &ServerOptions,
        router: Router,
        health: HealthReporter,
        services: Vec<&'static str>,
        steer: &Health,
    ) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(&options.address)
            .await
            .map_err(|source| ServerError::Bind {
                address: options.address.clone(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| ServerError::Bind {
            address: options.address.clone(),
            source,
        })?;
        // Follows the certificate files until the listener and its last
        // connection are gone.
        let tls = match &options.tls {
            Some(tls) => Some(Arc::new(crate::transport::ReloadingAcceptor::start(
                tls,
                &[b"h2"],
            )?)),
            None => None,
        };
        if !steer.is_serving() {
            // Before the first call can arrive, not after the follower first runs.
            for name in services.iter().copied().chain([""]) {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        }
        let follower = steer.follow(health.clone(), services.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let in_flight = router.routes.in_flight.clone();
        let grace = options.grace_period;
        let service_for = move |peer: crate::wrapper::Peer| router.for_connection(peer);
        let task = tokio::spawn(crate::transport::serve(
            listener,
            service_for,
            tls,
            options.limits.clone(),
            async move {
                let _ = stopped.await;
            },
            grace,
            in_flight.clone(),
        ));
        let advertise = options
            .advertise
            .clone()
            .unwrap_or_else(|| advertised_address(address));
        Ok(RunningServer {
            address,
            advertise,
            stop: Some(stop),
            task,
            health,
            services,
            follower,
            in_flight,
            registration: None,
        })
    }

    /// Ties a registration to the server: [`RunningServer::stop`] removes it first.
    pub(crate) fn attach(&mut self, registration: crate::registry::Registration) {
        self.registration = Some(registration);
    }

    /// The record this server registered, if it registered.
    pub fn registered(&self) -> Option<&crate::registry::Service> {
        self.registration.as_ref().map(|r| r.service())
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The address callers should dial.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Calls being handled right now (streams count until they end).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Graceful shutdown: deregisters (so callers stop picking this node), reports
    /// `NOT_SERVING`, stops accepting, and lets in-flight calls finish for up to the
    /// grace period. Returns `true` if they all finished in time.
    pub async fn stop(mut self) -> bool {
        if let Some(registration) = self.registration.take() {
            registration.stop().await;
        }
        // Stopping wins over whatever the service set.
        self.follower.abort();
        for name in self.services.iter().copied().chain(["", health::LIVENESS]) {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or(false)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Deregistering first (the registration's own drop), then the listener stops.
        drop(self.registration.take());
        self.follower.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The bound address as others can dial it: a wildcard IP is replaced by this host's
/// first non-loopback address (or loopback if it has none).
fn advertised_address(bound: SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let ip = local_ip().unwrap_or(if bound.is_ipv4() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    });
    SocketAddr::new(ip, bound.port()).to_string()
}

/// This host's outbound IP, found by "connecting" a UDP socket (no packet is sent).
fn local_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.255:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_advertises_a_wildcard() {
        let bound: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        let adv: SocketAddr = advertised_address(bound).parse().unwrap();
        assert!(!adv.ip().is_unspecified());
        assert_eq!(adv.port(), 4000);
        assert_eq!(
            advertised_address("127.0.0.1:5".parse().unwrap()),
            "127.0.0.1:5"
        );
    }
}
