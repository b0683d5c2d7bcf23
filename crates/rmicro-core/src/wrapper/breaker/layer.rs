//! The breaker's configuration, and the circuits it keeps: one per command, for as
//! long as the layer (and so the client holding it) lives.

use super::circuit::Circuit;
use super::{BreakerService, Settings};
use crate::errors::{Code, Error};
use crate::transport::Body;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::time::Instant;

/// Where circuit breakers come from: [`Breaker::hystrix`].
#[derive(Debug, Clone, Copy)]
pub struct Breaker;

impl Breaker {
    /// A breaker with hystrix-go's defaults ([`Settings::default`]), one circuit per
    /// `service.endpoint`.
    pub fn hystrix() -> BreakerLayer {
        BreakerLayer::new(Settings::default())
    }
}

/// A reply given instead of an error: it gets the error the call ended with.
pub(super) type Fallback = dyn Fn(&Error) -> Option<http::Response<Body>> + Send + Sync;

/// The circuit breaker as a tower layer; see the [module docs](super).
///
/// Clones share their circuits.
#[derive(Clone)]
pub struct BreakerLayer {
    pub(super) shared: Arc<Shared>,
}

/// One service's circuits, by endpoint.
type Endpoints = HashMap<Box<str>, Arc<Mutex<Circuit>>>;

/// What every service a layer builds shares.
pub(super) struct Shared {
    defaults: Settings,
    commands: HashMap<String, Settings>,
    /// Which codes count as failures, by code number.
    failures: [bool; 17],
    pub(super) fallback: Option<Arc<Fallback>>,
    /// service → endpoint → circuit.
    circuits: RwLock<HashMap<Box<str>, Endpoints>>,
}

impl std::fmt::Debug for BreakerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("defaults", &self.shared.defaults)
            .field("commands", &self.shared.commands)
            .finish_non_exhaustive()
    }
}

/// Every breaker alive in the process, for the Hystrix stream (hystrix-go's
/// circuits are global too); dead ones are pruned as the stream reads them.
static LIVE: crate::sync::Live<Shared> = crate::sync::Live::new();

fn make_live(shared: Shared) -> Arc<Shared> {
    LIVE.add(shared)
}

/// The status of every circuit of every breaker alive in the process, with its
/// settings, by name.
pub(super) fn live_circuits(now: Instant) -> Vec<(CircuitStatus, Settings)> {
    let breakers = LIVE.alive();
    let mut all: Vec<(CircuitStatus, Settings)> = breakers
        .iter()
        .flat_map(|shared| shared.statuses(now))
        .collect();
    all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    all
}

impl BreakerLayer {
    /// A breaker whose commands use `defaults`.
    pub fn new(defaults: Settings) -> Self {
        let mut failures = [false; 17];
        for (number, counts) in failures.iter_mut().enumerate() {
            *counts = Code::from_i32(number as i32).is_server_fault();
        }
        BreakerLayer {
            shared: make_live(Shared {
                defaults,
                commands: HashMap::new(),
                failures,
                fallback: None,
                circuits: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Settings for one command (`service.endpoint`, e.g. `user.User.Login`) instead
    /// of the defaults.
    pub fn command(self, name: impl Into<String>, settings: Settings) -> Self {
        self.configure(|shared| {
            shared.commands.insert(name.into(), settings);
        })
    }

    /// The status codes that count as failures (instead of the server-side faults).
    pub fn failure_codes(self, codes: impl IntoIterator<Item = Code>) -> Self {
        let codes: Vec<Code> = codes.into_iter().collect();
        self.configure(|shared| {
            shared.failures = [false; 17];
            for code in codes {
                if let Some(counts) = shared.failures.get_mut(code.as_i32() as usize) {
                    *counts = true;
                }
            }
        })
    }

    /// Answers a failed call with `fallback`'s reply when it gives one: the error
    /// (circuit open, timeout, limit reached, or the callee's own) is passed in;
    /// `None` lets the error through. [`reply`](super::reply) builds a reply.
    pub fn fallback(
        self,
        fallback: impl Fn(&Error) -> Option<http::Response<Body>> + Send + Sync + 'static,
    ) -> Self {
        self.configure(|shared| shared.fallback = Some(Arc::new(fallback)))
    }

    /// Whether circuit `name` (`service.endpoint`) is open now (fails fast); `false`
    /// for a command not called yet.
    pub fn is_open(&self, name: &str) -> bool {
        let circuits = crate::sync::read(&self.shared.circuits);
        circuits.iter().any(|(service, endpoints)| {
            endpoints.iter().any(|(endpoint, circuit)| {
                name.strip_prefix(&**service)
                    .and_then(|rest| rest.strip_prefix('.'))
                    == Some(&**endpoint)
                    && crate::sync::lock(circuit).is_open()
            })
        })
    }

    /// Every circuit made so far and its figures over the rolling window, by name.
    pub fn circuits(&self) -> Vec<CircuitStatus> {
        let mut all: Vec<CircuitStatus> = self
            .shared
            .statuses(Instant::now())
            .into_iter()
            .map(|(status, _)| status)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Changes the settings; a clone made earlier keeps its own (and its circuits).
    fn configure(self, change: impl FnOnce(&mut Shared)) -> Self {
        // A new `Shared` each time (the process-wide list holds a weak reference to
        // every one, so none can be changed in place): settings are copied, circuits
        // start empty, as they are when a layer is being configured.
        let current = &self.shared;
        let mut shared = Shared {
            defaults: current.defaults.clone(),
            commands: current.commands.clone(),
            failures: current.failures,
            fallback: current.fallback.clone(),
            circuits: RwLock::new(HashMap::new()),
        };
        change(&mut shared);
        BreakerLayer {
            shared: make_live(shared),
        }
    }
}

/// One circuit's state and its figures over the last 10 s, as a dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitStatus {
    /// The command, `service.endpoint`.
    pub name: String,
    /// Whether calls fail fast now (open or half-open).
    pub open: bool,
    /// Calls counted in the window, refused ones included.
    pub requests: u64,
    /// Calls that succeeded (or failed with a code that does not count).
    pub successes: u64,
    /// Calls that failed with a code that counts.
    pub failures: u64,
    /// Calls cut by the breaker's timeout or the call's deadline.
    pub timeouts: u64,
    /// Calls refused at the concurrency limit.
    pub rejected: u64,
    /// Calls refused because the circuit was open.
    pub short_circuited: u64,
    /// Errors (all but successes) in percent of requests.
    pub error_percentage: u64,
    /// Failed calls the fallback answered.
    pub fallback_successes: u64,
    /// Failed calls the fallback declined.
    pub fallback_failures: u64,
    /// Calls running now.
    pub in_flight: u32,
    /// Most calls running at once within the window.
    pub max_in_flight: u32,
    /// Mean latency of the calls that ran, in milliseconds.
    pub latency_mean_ms: u32,
    /// Latency percentiles of the calls that ran (Hystrix's 0, 25, 50, 75, 90, 95,
    /// 99, 99.5 and 100), in milliseconds.
    pub latency_percentiles_ms: [(f64, u32); 9],
    /// Every call since the circuit was made, by what happened to it.
    pub totals: EventTotals,
}

/// A circuit's calls since it was made, by what happened to them (Prometheus's
/// `micro_breaker_calls_total`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTotals {
    /// Calls that succeeded (or failed with a code that does not count).
    pub successes: u64,
    /// Calls that failed with a code that counts.
    pub failures: u64,
    /// Calls cut by the breaker's timeout or the call's deadline.
    pub timeouts: u64,
    /// Calls refused at the concurrency limit.
    pub rejected: u64,
    /// Calls refused because the circuit was open.
    pub short_circuited: u64,
}

/// The percentiles Hystrix's dashboard shows.
const LATENCY_PERCENTILES: [f64; 9] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 100.0];

impl Shared {
    /// Each circuit's status now, with its settings.
    fn statuses(&self, now: Instant) -> Vec<(CircuitStatus, Settings)> {
        let circuits = crate::sync::read(&self.circuits);
        circuits
            .values()
            .flat_map(HashMap::values)
            .map(|circuit| {
                let mut circuit = crate::sync::lock(circuit);
                let snapshot = circuit.snapshot(now);
                let status = CircuitStatus {
                    name: circuit.name().to_owned(),
                    open: snapshot.open,
                    requests: snapshot.window.requests(),
                    successes: snapshot.window.success,
                    failures: snapshot.window.failure,
                    timeouts: snapshot.window.timeout,
                    rejected: snapshot.window.rejected,
                    short_circuited: snapshot.window.short_circuited,
                    fallback_successes: snapshot.window.fallback_success,
                    fallback_failures: snapshot.window.fallback_failure,
                    error_percentage: snapshot.window.error_percentage(),
                    in_flight: snapshot.in_flight,
                    max_in_flight: snapshot.max_in_flight,
                    latency_mean_ms: snapshot.latency_mean(),
                    latency_percentiles_ms: LATENCY_PERCENTILES
                        .map(|p| (p, snapshot.latency_percentile(p))),
                    totals: EventTotals {
                        successes: snapshot.totals.success,
                        failures: snapshot.totals.failure,
                        timeouts: snapshot.totals.timeout,
                        rejected: snapshot.totals.rejected,
                        short_circuited: snapshot.totals.short_circuited,
                    },
                };
                (status, circuit.settings().clone())
            })
            .collect()
    }

    /// The circuit of `service`.`endpoint`, made on its first call.
    pub(super) fn circuit(
        &self,
        service: &str,
        endpoint: &str,
        now: Instant,
    ) -> Arc<Mutex<Circuit>> {
        if let Some(circuit) = crate::sync::read(&self.circuits)
            .get(service)
            .and_then(|endpoints| endpoints.get(endpoint))
        {
            return circuit.clone();
        }
        let mut circuits = crate::sync::write(&self.circuits);
        let endpoints = circuits.entry(service.into()).or_default();
        endpoints
            .entry(endpoint.into())
            .or_insert_with(|| {
                let name = format!("{service}.{endpoint}");
                let settings = self.commands.get(&name).unwrap_or(&self.defaults).clone();
                Arc::new(Mutex::new(Circuit::new(name, settings, now)))
            })
            .clone()
    }

    /// Whether a call that ended with `code` counts against its circuit.
    pub(super) fn is_failure(&self, code: Code) -> bool {
        self.failures
            .get(code.as_i32() as usize)
            .copied()
            .unwrap_or(true)
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService::new(inner, self.shared.clone())
    }
}
