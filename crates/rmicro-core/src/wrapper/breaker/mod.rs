//! Circuit breaking, Hystrix's way: `.wrap_client(Breaker::hystrix())`.
//!
//! One circuit per command, and a command is `service.endpoint`
//! (`greeter.Greeter.SayHello`), as go-micro's hystrix wrapper names it. Each circuit
//! counts its calls over a rolling window of ten one-second buckets. When, within
//! the window, at least *request volume threshold* calls were made and at least
//! *error percent threshold* % of them failed, the circuit **opens**: calls fail at
//! once, without any I/O, with `UNAVAILABLE` and an [`Error`](crate::Error) whose
//! `id` is the calling service and whose detail says why:
//!
//! ```text
//! circuit open for greeter.Greeter.SayHello: 12 of 20 calls failed in the last 10 s; next trial in 3.2 s
//! ```
//!
//! After the *sleep window*, exactly one call goes through as a trial (**half-open**):
//! its success closes the circuit and clears the window, its failure opens it for
//! another sleep window. A call that runs past the breaker's *timeout* ends with
//! `DEADLINE_EXCEEDED`; one beyond *max concurrent requests* ends at once with
//! `RESOURCE_EXHAUSTED`; both count as failures. Which status codes count is
//! configurable; by default the server-side faults (`UNAVAILABLE`,
//! `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `RESOURCE_EXHAUSTED`) do
//! and the caller's own mistakes (`INVALID_ARGUMENT`, `NOT_FOUND`, …) do not.
//!
//! Defaults are hystrix-go's ([`Settings::default`]); [`BreakerLayer::command`]
//! overrides them for one command. Circuits live in the layer, so as long as the
//! client: they survive connection loss and node changes.
//!
//! `--hystrix-stream-address 127.0.0.1:9092` (or [`HystrixStream`]) serves every
//! circuit's figures as the Hystrix dashboard reads them, on `GET /hystrix.stream`.
//!
//! Laid out as tower lays out its middleware: `layer.rs` (configuration and the
//! circuits), `service.rs` (admission), `future.rs` (the timeout and the outcome),
//! and `circuit.rs` (the state machine). The layer is a plain tower layer over
//! `http::Request`, so it also wraps a tonic channel.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::breaker::{Breaker, Settings};
//! use std::time::Duration;
//! let service = rmicro::Service::builder("base")
//!     .args(["base"])
//!     .wrap_client(
//!         Breaker::hystrix().command(
//!             "user.User.Login",
//!             Settings { timeout: Duration::from_secs(3), ..Settings::default() },
//!         ),
//!     )
//!     .build()
//!     .expect("valid flags");
//! ```

mod circuit;
mod future;
mod layer;
mod service;
pub mod stream;

pub use future::BreakerFuture;
pub use layer::{Breaker, BreakerLayer, CircuitStatus, EventTotals};

/// Every circuit of every breaker alive in the process, by name.
pub(crate) fn all_circuits() -> Vec<CircuitStatus> {
    layer::live_circuits(tokio::time::Instant::now())
        .into_iter()
        .map(|(status, _)| status)
        .collect()
}
pub use service::BreakerService;
pub use stream::HystrixStream;

use std::time::Duration;

/// The detail of a call the breaker's timeout ended.
pub(crate) fn timeout_detail(command: &str, timeout: Duration) -> String {
    format!("{command} did not answer within the breaker's timeout of {timeout:?}")
}

/// One command's settings, hystrix-go's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a call may take before it counts as a timeout (1 s).
    pub timeout: Duration,
    /// Calls of one command in flight at once; more are refused (10).
    pub max_concurrent_requests: u32,
    /// Calls in the window before the error percentage can open the circuit (20).
    pub request_volume_threshold: u32,
    /// How long an open circuit waits before its trial call (5 s).
    pub sleep_window: Duration,
    /// Errors, in percent of the window's calls, that open the circuit (50).
    pub error_percent_threshold: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_secs(1),
            max_concurrent_requests: 10,
            request_volume_threshold: 20,
            sleep_window: Duration::from_secs(5),
            error_percent_threshold: 50,
        }
    }
}

/// A gRPC reply holding `message`, as a [`BreakerLayer::fallback`] returns it.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::wrapper::breaker::{Breaker, reply};
/// let breaker = Breaker::hystrix().fallback(|_error| Some(reply(&"cached".to_owned())));
/// # let _ = breaker;
/// ```
pub fn reply<M: prost::Message>(message: &M) -> http::Response<crate::transport::Body> {
    let encoded = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&encoded);
    let mut trailers = http::HeaderMap::new();
    trailers.insert(
        crate::transport::headers::GRPC_STATUS,
        http::HeaderValue::from_static("0"),
    );
    let frames = [
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(frame))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let mut response = http::Response::new(crate::transport::Body::new(
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::{Breaker, BreakerLayer, Settings, reply};
    use crate::errors::{Code, Error};
    use crate::transport::Body;
    use crate::wrapper::ClientCallInfo;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::time::Instant;
    use tower::{BoxError, Layer, ServiceExt};

    type Reply = Result<http::Response<Body>, BoxError>;

    /// A backend that answers every call with `answer` after `delay`, counting calls.
    #[derive(Clone)]
    struct Backend {
        calls: Arc<AtomicUsize>,
        answer: Arc<dyn Fn() -> Reply + Send + Sync>,
        delay: Duration,
    }

    impl Backend {
        fn new(answer: impl Fn() -> Reply + Send + Sync + 'static) -> Self {
            Backend {
                calls: Arc::new(AtomicUsize::new(0)),
                answer: Arc::new(answer),
                delay: Duration::ZERO,
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn service(
            &self,
        ) -> impl tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = BoxError,
            Future: Send,
        > + Clone
        + Send {
            let backend = self.clone();
            tower::service_fn(move |_request: http::Request<Body>| {
                let backend = backend.clone();
                async move {
                    backend.calls.fetch_add(1, Ordering::SeqCst);
                    if backend.delay == Duration::MAX {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(backend.delay).await;
                    (backend.answer)()
                }
            })
        }
    }

    fn failing() -> Backend {
        Backend::new(|| Err(Error::unavailable("greeter", "node is down").into()))
    }

    fn request() -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        request.extensions_mut().insert(
            ClientCallInfo::new(
                "greeter",
                "Greeter.SayHello",
                "/greeter.v1.Greeter/SayHello",
                Instant::now() + Duration::from_secs(30),
            )
            .with_caller(Some("base".into())),
        );
        request
    }

    /// One call through `breaker` over `backend`, its body read to the end; the code
    /// it ended with and the error, if any.
    async fn call(breaker: &BreakerLayer, backend: &Backend) -> (Code, Option<Error>) {
        match breaker.layer(backend.service()).oneshot(request()).await {
            Err(err) => match err.downcast::<Error>() {
                Ok(error) => (error.grpc_code(), Some(*error)),
                Err(other) => panic!("not an rmicro error: {other}"),
            },
            Ok(response) => {
                if let Some(outcome) = crate::wrapper::Outcome::of_trailers_only(&response) {
                    return (outcome.code(), outcome.error().cloned());
                }
                let trailers = response
                    .into_body()
                    .collect()
                    .await
                    .ok()
                    .and_then(|c| c.trailers().cloned())
                    .unwrap_or_default();
                let code = trailers
                    .get("grpc-status")
                    .map_or(Code::Unknown, |v| Code::from_header(v.as_bytes()));
                (code, None)
            }
        }
    }

    async fn open(breaker: &BreakerLayer) {
        let backend = failing();
        for _ in 0..20 {
            assert_eq!(call(breaker, &backend).await.0, Code::Unavailable);
        }
        assert!(breaker.is_open("greeter.Greeter.SayHello"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_fails_fast_without_calling_and_says_why() {
        let breaker = Breaker::hystrix();
        open(&breaker).await;
        let backend = failing();
        tokio::time::advance(Duration::from_millis(1_800)).await;
        let (code, error) = call(&breaker, &backend).await;
        assert_eq!(code, Code::Unavailable);
        assert_eq!(backend.calls(), 0, "no call reaches the backend");
        let error = error.expect("an error");
        assert_eq!(error.id, "base");
        assert_eq!(
            error.detail,
            "circuit open for greeter.Greeter.SayHello: 20 of 20 calls failed in the last \
             10 s; next trial in 3.2 s"
        );
        // Another command keeps its own circuit.
        assert!(!breaker.is_open("greeter.Greeter.SayGoodbye"));
        let circuits = breaker.circuits();
        assert_eq!(circuits.len(), 1);
        let status = &circuits[0];
        assert_eq!(status.name, "greeter.Greeter.SayHello");
        assert!(status.open);
        assert_eq!(
            (
                status.requests,
                status.failures,
                status.short_circuited,
                status.error_percentage
            ),
            (21, 20, 1, 100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_sleep_window_one_trial_of_100_callers_goes_through_and_closes() {
        let breaker = Breaker::hystrix();
        open(&breaker).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut backend = Backend::new(|| Ok(reply(&"hi".to_owned())));
        backend.delay = Duration::from_millis(50);
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let (breaker, backend) = (breaker.clone(), backend.clone());
                tokio::spawn(async move { call(&breaker, &backend).await.0 })
            })
            .collect();
        let mut codes = Vec::new();
        for c in calls {
            codes.push(c.await.expect("caller task"));
        }
        assert_eq!(backend.calls(), 1, "exactly one trial");
        assert_eq!(codes.iter().filter(|c| **c == Code::Ok).count(), 1);
        assert_eq!(
            codes.iter().filter(|c| **c == Code::Unavailable).count(),
            99
        );
        assert!(
            !breaker.is_open("greeter.Greeter.SayHello"),
            "the trial closed it"
        );
        assert_eq!(call(&breaker, &backend).await.0, Code::Ok);
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_for_another_sleep_window() {
        let breaker = Breaker::hystrix();
        open(&breaker).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let backend = failing();
        assert_eq!(call(&breaker, &backend).await.0, Code::Unavailable);
        assert_eq!(backend.calls(), 1, "the trial ran");
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert_eq!(call(&breaker, &backend).await.0, Code::Unavailable);
        assert_eq!(backend.calls(), 1, "still open");
        tokio::time::advance(Duration::from_millis(100)).await;
        let healthy = Backend::new(|| Ok(reply(&"hi".to_owned())));
        assert_eq!(call(&breaker, &healthy).await.0, Code::Ok);
        assert!(!breaker.is_open("greeter.Greeter.SayHello"));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_end_the_call_and_count_as_failures() {
        // Five 1 s timeouts in a row fit in the 10 s window.
        let breaker = BreakerLayer::new(Settings {
            request_volume_threshold: 5,
            ..Settings::default()
        });
        let mut backend = Backend::new(|| Ok(reply(&"late".to_owned())));
        backend.delay = Duration::MAX;
        let started = Instant::now();
        let (code, error) = call(&breaker, &backend).await;
        assert_eq!(code, Code::DeadlineExceeded);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(
            error.expect("an error").detail,
            "greeter.Greeter.SayHello did not answer within the breaker's timeout of 1s"
        );
        for _ in 0..3 {
            call(&breaker, &backend).await;
        }
        assert!(
            !breaker.is_open("greeter.Greeter.SayHello"),
            "4 of volume 5"
        );
        call(&breaker, &backend).await;
        assert!(breaker.is_open("greeter.Greeter.SayHello"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_mistakes_do_not_count_and_the_codes_are_configurable() {
        let not_found = || {
            Backend::new(|| {
                Ok(Error::not_found("greeter", "no such user")
                    .to_status()
                    .into_http())
            })
        };
        let breaker = Breaker::hystrix();
        for _ in 0..40 {
            assert_eq!(call(&breaker, &not_found()).await.0, Code::NotFound);
        }
        assert!(!breaker.is_open("greeter.Greeter.SayHello"));

        let strict = Breaker::hystrix().failure_codes([Code::NotFound]);
        for _ in 0..20 {
            call(&strict, &not_found()).await;
        }
        assert!(strict.is_open("greeter.Greeter.SayHello"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_in_the_trailers_counts_when_the_body_ends() {
        let breaker = Breaker::hystrix();
        let internal_in_trailers = Backend::new(|| {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
            let frames = [Ok::<_, std::convert::Infallible>(
                http_body::Frame::trailers(trailers),
            )];
            Ok(http::Response::new(Body::new(
                http_body_util::StreamBody::new(futures_util::stream::iter(frames)),
            )))
        });
        for _ in 0..20 {
            assert_eq!(
                call(&breaker, &internal_in_trailers).await.0,
                Code::Internal
            );
        }
        assert!(breaker.is_open("greeter.Greeter.SayHello"));
    }

    #[tokio::test(start_paused = true)]
    async fn per_command_settings_and_the_fallback() {
        let breaker = Breaker::hystrix()
            .command(
                "greeter.Greeter.SayHello",
                Settings {
                    request_volume_threshold: 2,
                    ..Settings::default()
                },
            )
            .fallback(|error| {
                (error.grpc_code() == Code::Unavailable && error.detail.starts_with("circuit open"))
                    .then(|| reply(&"from cache".to_owned()))
            });
        let backend = failing();
        assert_eq!(call(&breaker, &backend).await.0, Code::Unavailable);
        assert_eq!(call(&breaker, &backend).await.0, Code::Unavailable);
        assert!(
            breaker.is_open("greeter.Greeter.SayHello"),
            "volume 2 reached"
        );
        // Open: the fallback answers.
        assert_eq!(call(&breaker, &backend).await.0, Code::Ok);
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_whose_deadline_comes_first_times_out_at_its_deadline() {
        let breaker = Breaker::hystrix();
        let mut backend = Backend::new(|| Ok(reply(&"late".to_owned())));
        backend.delay = Duration::MAX;
        let mut request = http::Request::new(Body::empty());
        request.extensions_mut().insert(ClientCallInfo::new(
            "greeter",
            "Greeter.SayHello",
            "/greeter.v1.Greeter/SayHello",
            Instant::now() + Duration::from_millis(200),
        ));
        let started = Instant::now();
        let response = breaker
            .layer(backend.service())
            .oneshot(request)
            .await
            .expect("answered with a status");
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        let outcome = crate::wrapper::Outcome::of_trailers_only(&response).expect("a status");
        let error = outcome.error().cloned().expect("an error");
        assert_eq!(error.grpc_code(), Code::DeadlineExceeded);
        assert_eq!(error.id, crate::client::CLIENT_ID);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_limit_refuses_with_resource_exhausted() {
        let breaker = Breaker::hystrix();
        let mut backend = Backend::new(|| Ok(reply(&"slow".to_owned())));
        backend.delay = Duration::from_millis(500);
        let running: Vec<_> = (0..10)
            .map(|_| {
                let (breaker, backend) = (breaker.clone(), backend.clone());
                tokio::spawn(async move { call(&breaker, &backend).await.0 })
            })
            .collect();
        // Let the ten start (they need a few turns of the scheduler, no time).
        for _ in 0..1_000 {
            if backend.calls() == 10 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(backend.calls(), 10);
        let (code, error) = call(&breaker, &backend).await;
        assert_eq!(code, Code::ResourceExhausted);
        assert!(
            error
                .expect("an error")
                .detail
                .contains("max concurrent requests 10"),
        );
        for r in running {
            assert_eq!(r.await.expect("caller task"), Code::Ok);
        }
        assert_eq!(call(&breaker, &backend).await.0, Code::Ok);
    }
}
