//! What a wrapper's error means to the caller: tower layers fail with a `BoxError`
//! (`Elapsed`, `Overloaded`, a buffer's worker gone, …); the caller gets a precise
//! gRPC status instead of a dropped stream.

use crate::errors::Error;
use tower::BoxError;

/// A client wrapper's verdict that an attempt was **not sent**: the client counts it
/// as never having reached a handler and tries another node within its retry rules.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// let err: tower::BoxError = Box::new(rmicro::wrapper::NotSent::new("node is draining"));
/// assert!(err.is::<rmicro::wrapper::NotSent>());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("attempt not sent: {reason}")]
pub struct NotSent {
    reason: String,
}

impl NotSent {
    /// Refuses an attempt, saying why.
    pub fn new(reason: impl Into<String>) -> Self {
        NotSent {
            reason: reason.into(),
        }
    }

    /// Why the attempt was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A wrapper's refusal as a response: `error`'s gRPC status (trailers-only, with
/// rmicro's `micro-error-bin`), so it reaches the caller unchanged on an rmicro stack,
/// on a plain tonic server (which resets a stream whose layer fails) and through an
/// rmicro or tonic client alike.
pub(crate) fn refusal(error: Error) -> http::Response<crate::transport::Body> {
    error.to_status().into_http()
}

/// Turns a wrapper's error into the [`Error`] the caller receives, `id` = `service`.
///
/// | error | code |
/// |---|---|
/// | an [`Error`] (a wrapper's own verdict) | itself |
/// | `tower::timeout::error::Elapsed` | 408 → `DEADLINE_EXCEEDED` |
/// | `tower::load_shed::error::Overloaded` | 429 → `RESOURCE_EXHAUSTED` |
/// | `tower::buffer::error::Closed`, `ServiceError` | 503 → `UNAVAILABLE` |
/// | [`NotSent`] | 503 → `UNAVAILABLE` |
/// | anything else | 500 → `INTERNAL`, with the error's text |
pub fn error_from_wrapper(err: BoxError, service: &str) -> Error {
    let err = match err.downcast::<Error>() {
        Ok(err) => return *err,
        Err(err) => err,
    };
    if err.is::<tower::timeout::error::Elapsed>() {
        return Error::timeout(
            service,
            format!(
                "`{service}` did not answer within the time limit of its timeout wrapper (tower::timeout)"
            ),
        );
    }
    if err.is::<tower::load_shed::error::Overloaded>() {
        return Error::too_many_requests(
            service,
            format!(
                "`{service}` is overloaded: its concurrency or rate limit is reached and the \
                 load-shedding wrapper (tower::load_shed) refused the call; retry later"
            ),
        );
    }
    if err.is::<tower::buffer::error::Closed>() || err.is::<tower::buffer::error::ServiceError>() {
        return Error::unavailable(
            service,
            format!("`{service}` cannot take calls: a buffered wrapper's worker stopped ({err})"),
        );
    }
    if err.is::<NotSent>() {
        return Error::unavailable(service, err.to_string());
    }
    Error::internal(service, format!("a wrapper of `{service}` failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tower_errors_become_precise_codes() {
        let cases: Vec<(BoxError, u16, &str)> = vec![
            (
                Box::new(tower::timeout::error::Elapsed::new()),
                408,
                "time limit",
            ),
            (
                Box::new(tower::load_shed::error::Overloaded::new()),
                429,
                "overloaded",
            ),
            (Box::new(NotSent::new("draining")), 503, "draining"),
            (Box::new(Error::forbidden("auth", "no")), 403, "no"),
            ("disk on fire".into(), 500, "disk on fire"),
        ];
        for (err, code, text) in cases {
            let e = error_from_wrapper(err, "greeter");
            assert_eq!(e.code, code, "{e}");
            assert!(e.detail.contains(text), "{e}");
        }
    }
}
