//! Conversions between rmicro's types and tonic's.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::interop::tonic as interop;
//! let err = rmicro::Error::not_found("user", "no user 42");
//! let status = interop::status_from_error(&err);
//! assert_eq!(status.code(), tonic::Code::NotFound);
//! // An rmicro error survives the trip through a status unchanged.
//! assert_eq!(interop::error_from_status(&status, "caller"), err);
//! ```

use crate::transport::Body;

/// The gRPC status a tonic handler returns for `error`; the error itself travels in the
/// `micro-error-bin` trailer, so an rmicro caller gets it back unchanged.
pub fn status_from_error(error: &crate::Error) -> tonic::Status {
    error.to_status()
}

/// The [`Error`](crate::Error) a caller sees for a status tonic returned: the original
/// when the callee was rmicro, otherwise one built from the code and message with
/// `id` set to `default_id`.
pub fn error_from_status(status: &tonic::Status, default_id: &str) -> crate::Error {
    crate::Error::from_status(status, default_id)
}

/// rmicro's [`Code`](crate::Code) for tonic's.
pub fn code_from_tonic(code: tonic::Code) -> crate::Code {
    crate::Code::from_tonic(code)
}

/// tonic's code for rmicro's [`Code`](crate::Code).
pub fn code_to_tonic(code: crate::Code) -> tonic::Code {
    code.to_tonic()
}

/// Hands an rmicro body to tonic (no copy, no extra allocation).
pub fn body_into_tonic(body: Body) -> tonic::body::Body {
    body.into_engine()
}

/// Takes a body from tonic (no copy, no extra allocation).
pub fn body_from_tonic(body: tonic::body::Body) -> Body {
    Body::from_engine(body)
}
