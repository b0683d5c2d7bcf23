//! Rate limiting with a token bucket: `.wrap_handler(RateLimit::per_second(1000))`,
//! go-micro's `ratelimit.NewHandlerWrapper(1000)`.
//!
//! A limit of *n* calls per second refills one token every 1/*n* s; the bucket holds
//! a tenth of a second's worth (at least one, [`RateLimitLayer::burst`] changes it),
//! so a burst after a quiet spell is bounded and the rate measured over any second
//! stays close to *n*. The limit applies to all calls together ([`Scope::Global`],
//! the default), to each endpoint on its own ([`Scope::PerEndpoint`]), or to each
//! key: the caller's IP address ([`Scope::PerPeer`], server side) or a metadata
//! value such as a user id ([`Scope::PerMetadata`]).
//!
//! A call over the limit is refused at once with `RESOURCE_EXHAUSTED` and an
//! [`Error`](crate::Error) of code 429 ("too many requests: limit 1000/s for
//! user.User.Login"), or, in [`Mode::Wait`], waits up to a bound for a token and is
//! refused after it. Both sides: as a handler wrapper it limits what a service
//! serves; as a `wrap_client` wrapper, what it calls. `--ratelimit-server N` and
//! `--ratelimit-client N` set a global limit from the command line.
//!
//! Laid out as tower lays out its middleware: `layer.rs` (the limits),
//! `service.rs` (taking a token), `future.rs` (the call, or its refusal, or the wait).
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::ratelimit::{Mode, RateLimit, Scope};
//! use std::time::Duration;
//! let service = rmicro::Service::builder("user")
//!     .args(["user"])
//!     .wrap_handler(RateLimit::per_second(1000))
//!     .wrap_handler(
//!         RateLimit::per_second(5)
//!             .scope(Scope::PerMetadata("x-user-id".into()))
//!             .mode(Mode::Wait(Duration::from_millis(200))),
//!     )
//!     .build()
//!     .expect("valid flags");
//! ```

mod future;
mod layer;
mod service;

pub use future::RateLimitFuture;
pub(crate) use layer::refusals;
pub use layer::{Mode, RateLimit, RateLimitLayer, Scope};
pub use service::RateLimitService;

#[cfg(test)]
mod tests {
    use super::{Mode, RateLimit, RateLimitLayer, Scope};
    use crate::errors::{Code, Error};
    use crate::transport::Body;
    use crate::wrapper::CallInfo;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::{BoxError, Layer, ServiceExt};

    /// One call as a server's wrapper sees it, with `user` in `x-user-id`.
    async fn call(
        layer: &RateLimitLayer,
        calls: &Arc<AtomicUsize>,
        user: Option<&str>,
    ) -> Result<(), Error> {
        let calls = calls.clone();
        let backend = tower::service_fn(move |_request: http::Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(http::Response::new(Body::empty())) }
        });
        let mut request = http::Request::new(Body::empty());
        request.extensions_mut().insert(CallInfo::new(
            "greeter",
            "Greeter.SayHello",
            "/greeter.v1.Greeter/SayHello",
        ));
        if let Some(user) = user {
            request.headers_mut().insert(
                "x-user-id",
                http::HeaderValue::from_str(user).expect("ascii"),
            );
        }
        // A refusal is answered as its status (so it reaches callers on any server).
        let response = layer
            .layer(backend)
            .oneshot(request)
            .await
            .expect("answered");
        match crate::wrapper::Outcome::of_trailers_only(&response) {
            Some(outcome) => Err(outcome.error().cloned().expect("a refusal")),
            None => Ok(()),
        }
    }

    #[tokio::test]
    async fn over_the_limit_a_call_is_refused_with_429_and_the_limit_named() {
        let layer = RateLimit::per_second(10);
        let calls = Arc::new(AtomicUsize::new(0));
        call(&layer, &calls, None).await.expect("the first token");
        let error = call(&layer, &calls, None)
            .await
            .expect_err("the bucket holds one");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a refused call never ran");
        assert_eq!(error.grpc_code(), Code::ResourceExhausted);
        assert_eq!(error.code, 429);
        assert_eq!(error.id, "greeter");
        assert_eq!(
            error.detail,
            "too many requests: limit 10/s for greeter.Greeter.SayHello"
        );
    }

    #[tokio::test]
    async fn per_metadata_buckets_name_their_key() {
        let layer = RateLimit::per_second(10).scope(Scope::PerMetadata("x-user-id".into()));
        let calls = Arc::new(AtomicUsize::new(0));
        call(&layer, &calls, Some("ann"))
            .await
            .expect("ann's token");
        call(&layer, &calls, Some("bob"))
            .await
            .expect("bob's own bucket");
        let error = call(&layer, &calls, Some("ann"))
            .await
            .expect_err("ann's bucket is empty");
        assert_eq!(
            error.detail,
            "too many requests: limit 10/s for greeter.Greeter.SayHello per x-user-id ann"
        );
        call(&layer, &calls, None)
            .await
            .expect("calls without the key share one bucket");
        let error = call(&layer, &calls, None)
            .await
            .expect_err("and it is empty");
        assert!(
            error.detail.ends_with("for calls without x-user-id"),
            "{}",
            error.detail
        );
    }

    #[tokio::test]
    async fn wait_mode_waits_for_a_token_within_its_bound() {
        // 20/s: a token every 50 ms.
        let waiting = RateLimit::per_second(20)
            .burst(1)
            .mode(Mode::Wait(Duration::from_secs(1)));
        let calls = Arc::new(AtomicUsize::new(0));
        call(&waiting, &calls, None).await.expect("the first token");
        let started = std::time::Instant::now();
        call(&waiting, &calls, None)
            .await
            .expect("waits for the next token");
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A bound shorter than the next token: refused at once, saying why.
        let impatient = RateLimit::per_second(1).mode(Mode::Wait(Duration::from_millis(10)));
        call(&impatient, &calls, None)
            .await
            .expect("the first token");
        let error = call(&impatient, &calls, None)
            .await
            .expect_err("a second away");
        assert!(
            error.detail.contains("; waited 0s: the next token is"),
            "{}",
            error.detail
        );
        assert_eq!(error.grpc_code(), Code::ResourceExhausted);
    }
}
