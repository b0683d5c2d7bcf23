//! Interoperation with the engines rmicro runs on, for code that mixes rmicro with a
//! plain `tonic` stack.
//!
//! Everything else in rmicro's public API is rmicro's own ([`Code`](crate::Code),
//! [`Error`](crate::Error), [`Body`](crate::transport::Body), the wrapper types), so
//! services and wrappers do not change when the engine does. This module is the one
//! place engine types appear; a check in CI (`scripts/public-api`) fails when one
//! appears anywhere else.

pub mod tonic;

/// Hyper-level pieces of rmicro's server, for a listener of your own (the
/// gateway's): count a connection's calls, and drive it to its end, closing it
/// when idle or told to stop, as rmicro's server does.
pub mod hyper {
    pub use crate::transport::activity::{
        Activity, Counted, CountedBody, CountedFuture, drive_connection,
    };
}
