//! The gRPC header names rmicro reads and writes on every call, as ready-made
//! [`HeaderName`]s: a lookup by a `&str` validates and lower-cases the name on each
//! call, one by a `HeaderName` only hashes it.

use http::HeaderName;

/// `grpc-status`: the call's status code, in the trailers (or the headers of a
/// trailers-only response).
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: the status message, percent-encoded.
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`: how long the caller waits (`100m`, `5S`, …).
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// rmicro's error trailer ([`ERROR_TRAILER`](crate::errors::ERROR_TRAILER)).
pub(crate) const MICRO_ERROR: HeaderName = HeaderName::from_static(crate::errors::ERROR_TRAILER);
/// `grpc-retry-pushback-ms`: how long the server asks the caller to wait before it
/// retries (a negative value: do not retry), in the trailers (gRFC A6).
pub(crate) const GRPC_RETRY_PUSHBACK_MS: HeaderName =
    HeaderName::from_static("grpc-retry-pushback-ms");
