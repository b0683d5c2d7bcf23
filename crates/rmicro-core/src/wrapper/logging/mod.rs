//! Request logging through `tracing`: one event per call with service, endpoint,
//! status code and duration.
//!
//! Successful calls log at `DEBUG` (like go-micro, a service logs nothing per
//! successful call unless asked: `--log-level debug`), caller errors (bad request,
//! not found, …) at `WARN`, server faults (internal, unknown, unavailable, data loss)
//! at `ERROR`. At the default level a successful call costs no formatting and no I/O.
//!
//! Laid out as tower lays out its middleware, and a template for your own:
//! `layer.rs` (configuration; builds the service), `service.rs` (the behaviour),
//! `future.rs` (what the call returns, without boxing). Works on both
//! sides: `.wrap_handler(LoggingLayer::new())` logs what the service serves,
//! `.wrap_client(LoggingLayer::new())` what it calls.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::logging::LoggingLayer;
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter"])
//!     .wrap_handler(LoggingLayer::new())
//!     .wrap_client(LoggingLayer::new())
//!     .build()
//!     .expect("valid flags");
//! ```

mod future;
mod layer;
mod service;

pub use future::LoggingFuture;
pub use layer::LoggingLayer;
pub use service::Logging;

#[cfg(test)]
mod tests {
    use super::LoggingLayer;
    use crate::transport::Body;
    use crate::wrapper::{Call, CallInfo, Next};
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    /// Log lines written while `f` runs, at INFO.
    async fn logged<F: std::future::Future<Output = ()>>(f: F) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || SharedWriter(sink.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        f.await;
        drop(guard);
        let bytes = buffer.lock().expect("test buffer").clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    struct SharedWriter(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("test buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One call through the logging wrapper as rmicro's chain runs it, answered by
    /// `answer`, its body read to the end.
    async fn call(answer: http::Response<Body>) {
        let mut request = http::Request::new(Body::empty());
        request
            .extensions_mut()
            .insert(CallInfo::new("users", "Users.Get", "/users.v1.Users/Get"));
        let next = Next::from_fn(move |_request| async move { Ok(answer) });
        let response = (LoggingLayer::new().wrap_fn())(Call::new(request), next)
            .await
            .expect("answered");
        let _ = response.into_body().collect().await;
    }

    #[tokio::test]
    async fn failures_are_logged_at_warn_and_successes_only_at_debug() {
        let failed = logged(call(
            crate::Error::not_found("users", "no user 7")
                .to_status()
                .into_http(),
        ))
        .await;
        assert!(failed.contains("WARN"), "{failed}");
        assert!(failed.contains("call failed"), "{failed}");
        assert!(failed.contains("Users.Get"), "{failed}");
        assert!(failed.contains("no user 7"), "{failed}");
        let ok = logged(call(tonic::Status::ok("").into_http())).await;
        assert_eq!(ok, "", "a success logs nothing at INFO");
    }
}
