//! etcd for rmicro: a service [registry](EtcdRegistry) in go-micro's layout, a
//! config center [source](EtcdSource), and the small etcd v3 [client](EtcdClient)
//! under them.
//!
//! Make `--registry etcd --registry-address host:2379` work in a program by calling
//! [`install`] once before building the service:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! rmicro_etcd::install();
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter", "--registry", "etcd", "--registry-address", "127.0.0.1:2379"])
//!     .build()?;
//! assert!(service.registry().describe().starts_with("etcd://"));
//! # Ok(()) }
//! ```
//!
//! The client's stubs are generated from a subset of etcd's own `.proto` by protox at
//! build time, so building this crate needs no system `protoc`.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod config;
mod registry;
pub mod testing;

pub use client::{DEFAULT_TIMEOUT, EtcdClient, EtcdError, KeyValue, WatchEvent, WatchStream};
pub use config::EtcdSource;
pub use registry::{DEFAULT_PREFIX, EtcdRegistry};

/// etcd's v3 API messages and gRPC clients (the subset rmicro uses).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

/// The address used when `--registry etcd` is given without `--registry-address`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2379";

/// Makes `--registry etcd` (and `MICRO_REGISTRY=etcd`) build an [`EtcdRegistry`]
/// in this process (the address defaults to [`DEFAULT_ADDRESS`]), and
/// `--config-source etcd://HOST:PORT/PREFIX` an [`EtcdSource`].
pub fn install() {
    rmicro::registry::install("etcd", |address| {
        let registry = EtcdRegistry::new(address.unwrap_or(DEFAULT_ADDRESS))?;
        Ok(std::sync::Arc::new(registry))
    });
    rmicro::config::source::install("etcd", |address, prefix| {
        Ok(std::sync::Arc::new(EtcdSource::new(address, prefix)?))
    });
}
