//! Errors that cross service boundaries, in go-micro's shape.
//!
//! A handler returns an [`Error`]; the server turns it into a gRPC status whose code
//! matches the error's HTTP-style `code` and whose message is the `detail`, so a stock
//! gRPC client sees a meaningful code and a readable message. The whole error also
//! travels as JSON in the `micro-error-bin` trailer, so an rmicro caller gets back the
//! same `id`, `code` and `detail` the callee produced.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A gRPC status code (the numbers and names of `grpc/status.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// 0: not an error.
    Ok = 0,
    /// 1: the caller cancelled the call.
    Cancelled = 1,
    /// 2: an error without a better code.
    Unknown = 2,
    /// 3: the request is invalid, whatever the server's state.
    InvalidArgument = 3,
    /// 4: the deadline passed before the call finished.
    DeadlineExceeded = 4,
    /// 5: the entity asked for does not exist.
    NotFound = 5,
    /// 6: the entity to create exists already.
    AlreadyExists = 6,
    /// 7: the caller may not do this.
    PermissionDenied = 7,
    /// 8: a quota, a limit or space ran out.
    ResourceExhausted = 8,
    /// 9: the system is not in the state the call needs.
    FailedPrecondition = 9,
    /// 10: the call was aborted (a conflict, a transaction abort).
    Aborted = 10,
    /// 11: past the valid range.
    OutOfRange = 11,
    /// 12: the method is not implemented or not served.
    Unimplemented = 12,
    /// 13: an invariant broke inside the server.
    Internal = 13,
    /// 14: the service is unavailable now; a retry may succeed.
    Unavailable = 14,
    /// 15: data was lost or corrupted.
    DataLoss = 15,
    /// 16: the caller is not authenticated.
    Unauthenticated = 16,
}

impl Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code with this number; numbers gRPC does not define are `Unknown`.
    pub fn from_i32(value: i32) -> Code {
        usize::try_from(value)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code's number, as sent in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// Reads a `grpc-status` header value (ASCII digits); anything else is `Unknown`.
    pub fn from_header(value: &[u8]) -> Code {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32)
    }

    /// The code's name in `status.proto` (`UNAVAILABLE`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Faults of the server side (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`,
    /// `UNKNOWN`, `DATA_LOSS`, `RESOURCE_EXHAUSTED`), as opposed to the caller's own
    /// mistakes (`INVALID_ARGUMENT`, `NOT_FOUND`, …).
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::Unknown
                | Code::DataLoss
                | Code::ResourceExhausted
        )
    }

    pub(crate) fn to_tonic(self) -> tonic::Code {
        tonic::Code::from_i32(self.as_i32())
    }

    pub(crate) fn from_tonic(code: tonic::Code) -> Code {
        Code::from_i32(code as i32)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Trailer that carries the JSON of an [`Error`] next to the gRPC status.
pub const ERROR_TRAILER: &str = "micro-error-bin";

/// An error returned by a handler or a call: `{id, code, detail, status}`, as in go-micro.
///
/// `code` is an HTTP-style status code (400, 404, 500, …); `status` is its reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// Who produced the error, e.g. `greeter` or `rmicro.client`.
    pub id: String,
    /// HTTP-style status code.
    pub code: u16,
    /// Human-readable explanation.
    pub detail: String,
    /// Reason phrase of `code` (`"Bad Request"`, …).
    pub status: String,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(id: impl Into<String>, detail: impl Into<String>) -> Self {
            Self::new(id, $code, detail)
        }
    )*};
}

impl Error {
    /// Builds an error with any HTTP-style code; `status` is derived from it.
    pub fn new(id: impl Into<String>, code: u16, detail: impl Into<String>) -> Self {
        Error {
            id: id.into(),
            code,
            detail: detail.into(),
            status: reason_phrase(code).to_owned(),
        }
    }

    constructors! {
        /// 400: the request is malformed or invalid.
        bad_request => 400;
        /// 401: the caller is not authenticated.
        unauthorized => 401;
        /// 403: the caller may not do this.
        forbidden => 403;
        /// 404: the thing asked for does not exist.
        not_found => 404;
        /// 405: the method is not allowed.
        method_not_allowed => 405;
        /// 408: the call ran past its deadline.
        timeout => 408;
        /// 409: the request conflicts with the current state.
        conflict => 409;
        /// 413: the message is larger than allowed.
        too_large => 413;
        /// 429: too many requests.
        too_many_requests => 429;
        /// 500: something failed inside the service.
        internal => 500;
        /// 501: the endpoint does not exist.
        not_implemented => 501;
        /// 503: the service cannot take the call now; try again.
        unavailable => 503;
    }

    /// The gRPC status code that corresponds to this error's `code`.
    pub fn grpc_code(&self) -> Code {
        match self.code {
            400 | 422 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            405 | 501 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            409 => Code::AlreadyExists,
            412 => Code::FailedPrecondition,
            413 | 429 => Code::ResourceExhausted,
            499 => Code::Cancelled,
            503 => Code::Unavailable,
            500 => Code::Internal,
            _ => Code::Unknown,
        }
    }

    /// The HTTP-style code that corresponds to a gRPC status code.
    pub fn http_code(code: Code) -> u16 {
        match code {
            Code::Ok => 200,
            Code::InvalidArgument | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::DeadlineExceeded => 408,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::FailedPrecondition => 412,
            Code::ResourceExhausted => 429,
            Code::Cancelled => 499,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Internal | Code::Unknown | Code::DataLoss => 500,
        }
    }

    /// Turns a gRPC status received by a caller into an [`Error`].
    ///
    /// When the callee was an rmicro service the original error travels in the
    /// `micro-error-bin` trailer and comes back unchanged; otherwise one is built from
    /// the status code and message, with `id` set to `default_id`.
    pub(crate) fn from_status(status: &tonic::Status, default_id: &str) -> Self {
        if let Some(value) = status.metadata().get_bin(ERROR_TRAILER)
            && let Ok(bytes) = value.to_bytes()
            && let Ok(err) = serde_json::from_slice::<Error>(&bytes)
        {
            return err;
        }
        Error::new(
            default_id,
            Self::http_code(Code::from_tonic(status.code())),
            status.message(),
        )
    }

    /// The error a caller sees for a gRPC status it received as `code` + `message`
    /// (+ the `micro-error-bin` value, when the callee was rmicro).
    pub fn from_grpc(
        code: Code,
        message: &str,
        micro_error: Option<&[u8]>,
        default_id: &str,
    ) -> Self {
        if let Some(json) = micro_error
            && let Ok(err) = serde_json::from_slice::<Error>(json)
        {
            return err;
        }
        Error::new(default_id, Self::http_code(code), message)
    }

    /// Turns this error into a gRPC status carrying the error in its trailer.
    pub(crate) fn to_status(&self) -> tonic::Status {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Ok(json) = serde_json::to_vec(self) {
            metadata.insert_bin(
                ERROR_TRAILER,
                tonic::metadata::MetadataValue::from_bytes(&json),
            );
        }
        tonic::Status::with_metadata(self.grpc_code().to_tonic(), self.detail.clone(), metadata)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} from {}: {}",
            self.code, self.status, self.id, self.detail
        )
    }
}

impl std::error::Error for Error {}

/// The reason phrase of an HTTP status code, as go-micro puts in `status`.
fn reason_phrase(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or(match code {
            499 => "Client Closed Request",
            _ => "Unknown",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_grpc_status() {
        let err = Error::conflict("user", "user `ann` already exists");
        let status = err.to_status();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_eq!(status.message(), "user `ann` already exists");
        assert_eq!(Error::from_status(&status, "client"), err);
    }

    #[test]
    fn builds_an_error_from_a_foreign_status() {
        let status = tonic::Status::not_found("no such row");
        let err = Error::from_status(&status, "rmicro.client");
        assert_eq!(err.code, 404);
        assert_eq!(err.status, "Not Found");
        assert_eq!(err.id, "rmicro.client");
        assert_eq!(err.detail, "no such row");
    }

    #[test]
    fn serializes_in_go_micro_json_shape() {
        let json = serde_json::to_value(Error::bad_request("greeter", "name is empty")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "greeter", "code": 400, "detail": "name is empty", "status": "Bad Request"})
        );
    }

    #[test]
    fn codes_match_grpc_numbers_and_names() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.as_i32(), i as i32);
            assert_eq!(Code::from_tonic(code.to_tonic()), *code);
            assert_eq!(code.to_tonic() as i32, i as i32, "{code}");
        }
        assert_eq!(Code::from_i32(99), Code::Unknown);
        assert_eq!(Code::from_header(b"14"), Code::Unavailable);
        assert_eq!(Code::from_header(b"x"), Code::Unknown);
        assert_eq!(Code::Unavailable.to_string(), "UNAVAILABLE");
    }

    #[test]
    fn every_constructor_maps_to_its_grpc_code() {
        let cases = [
            (Error::bad_request("s", ""), Code::InvalidArgument),
            (Error::unauthorized("s", ""), Code::Unauthenticated),
            (Error::forbidden("s", ""), Code::PermissionDenied),
            (Error::not_found("s", ""), Code::NotFound),
            (Error::timeout("s", ""), Code::DeadlineExceeded),
            (Error::conflict("s", ""), Code::AlreadyExists),
            (Error::internal("s", ""), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(err.grpc_code(), code, "{err}");
            assert_eq!(Error::http_code(code), err.code, "{err}");
        }
    }
}
