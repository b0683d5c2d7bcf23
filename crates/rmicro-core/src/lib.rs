//! rmicro: a microservice framework for Rust in the spirit of go-micro.
//!
//! Write a `.proto`, generate code with `rmicro-build`, implement the generated
//! handler trait, and serve it:
//!
//! ```no_run
//! # extern crate rmicro_core as rmicro;
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let service = rmicro::Service::builder("greeter")
//!     .version("1.0.0")
//!     // .handle(GreeterServer::new(MyGreeter)): the server `rmicro-build` generated
//!     .build()?; // parses --flags and MICRO_* env
//! service.run().await?; // serves until SIGINT/SIGTERM, then shuts down gracefully
//! # Ok(())
//! # }
//! ```
//!
//! Any stock gRPC client can call the service, and the generated `GreeterClient`
//! calls it in one line. The modules are the pieces go-micro users know:
//! [`server`], [`client`], [`codec`], [`transport`], [`wrapper`], [`registry`],
//! [`errors`], [`metadata`].

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// `rmicro::…` paths (the generated code's, the docs') name this crate here too.
extern crate self as rmicro;

pub mod broker;
pub mod client;
pub mod cmd;
pub mod codec;
pub mod config;
mod context;
pub mod errors;
pub mod interop;
pub mod logging;
pub mod metadata;
mod plugins;
pub mod registry;
pub mod selector;
pub mod server;
mod service;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;
pub mod wrapper;

pub use client::{CallOptions, Client, ResponseStream};
pub use context::Context;
pub use errors::Code;
pub use errors::Error;
pub use metadata::Metadata;
pub use server::{Request, RequestStream, ResponseSender};
pub use service::{BuildError, Service, ServiceBuilder};

/// Items the generated code refers to; not for direct use.
#[doc(hidden)]
pub mod __codegen {
    pub use crate::server::dispatch;
    pub use futures_util::Stream;
    pub use futures_util::future::BoxFuture;
    pub use http;
    pub use prost;
}

/// Entry points for the fuzz targets in `fuzz/` into parsers that are not public:
/// each takes untrusted bytes as the server would and must never panic. Not for
/// applications.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;

    /// Takes gRPC length-prefixed messages off `bytes` as the JSON codec's
    /// decoder does (at most `max_len` bytes each); how many it took.
    pub fn grpc_frames(bytes: &[u8], max_len: usize) -> usize {
        let mut buf = BytesMut::from(bytes);
        let mut taken = 0;
        while let Ok(Some(_)) = crate::codec::frames::next_message(&mut buf, max_len) {
            taken += 1;
        }
        taken
    }

    /// Reads a delivery as the HTTP broker's endpoint does (a JSON envelope from
    /// another process), then its body as the typed subscribers decode it (JSON,
    /// and protobuf as a `google.protobuf.Struct`); the message when it parsed.
    pub fn broker_delivery(body: &[u8]) -> Option<crate::broker::Message> {
        let message = crate::broker::http::decode_envelope(body).ok()?;
        let _ = crate::broker::typed::decode_json::<serde_json::Value>(&message);
        let _ = crate::broker::typed::decode_proto::<prost_types::Struct>(&message);
        Some(message)
    }

    /// What the HTTP broker sends for `message` (to check that what is read
    /// is what was written).
    pub fn broker_envelope(message: crate::broker::Message) -> Vec<u8> {
        crate::broker::http::encode_envelope(message).unwrap_or_default()
    }

    /// Reads lines of `name:value` as call metadata, the way a server reads
    /// request headers (lines that are not valid header names or values are
    /// dropped, as the HTTP/2 layer would refuse them).
    pub fn metadata(data: &[u8]) -> usize {
        let mut headers = http::HeaderMap::new();
        for line in data.split(|b| *b == b'\n') {
            let Some(at) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(&line[..at]),
                http::HeaderValue::from_bytes(&line[at + 1..]),
            ) {
                headers.append(name, value);
            }
        }
        let metadata = crate::metadata::Metadata::from_headers(headers);
        let mut n = 0;
        for (key, value) in metadata.iter() {
            n += key.len() + value.len();
            if key.ends_with("-bin") {
                n += metadata.get_bin(key).map_or(0, |v| v.len());
            }
        }
        n
    }
}

/// Includes the code `rmicro-build` generated for a `.proto` package. (Not compiled
/// here: it needs a build script's output; `examples/greeter/src/lib.rs` compiles it.)
///
/// ```ignore
/// pub mod greeter { rmicro::include_proto!("greeter.v1"); }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}
