//! etcd for rmicro: a service [registry](EtcdRegistry) in go-micro's layout, a
//! config center [source](EtcdSource), and the small etcd v3 [client](EtcdClient)
//! under them.
//!
//! `--registry etcd` works in any program this crate is linked into: depend on the
//! `rmicro` facade with feature `etcd` (or on this crate); nothing to call at start.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rmicro_etcd as _; // only needed when nothing else of the crate is used
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
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use client::{DEFAULT_TIMEOUT, EtcdClient, EtcdError, KeyValue, WatchEvent, WatchStream};
pub use config::EtcdSource;
pub use registry::{DEFAULT_PREFIX, EtcdRegistry};

/// etcd's v3 API messages and gRPC clients (the subset rmicro uses). Private: they are
/// tonic's generated clients, and users reach etcd through [`EtcdClient`].
#[allow(missing_docs, clippy::all, dead_code, unreachable_pub)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

/// The address used when `--registry etcd` is given without `--registry-address`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2379";

/// `--registry etcd` (and `MICRO_REGISTRY=etcd`) builds an [`EtcdRegistry`] (the
/// address defaults to [`DEFAULT_ADDRESS`]) in any binary this crate is linked into.
#[linkme::distributed_slice(rmicro::registry::REGISTRIES)]
static REGISTRY: (&str, rmicro::registry::Factory) = ("etcd", |address| {
    let registry = EtcdRegistry::new(address.unwrap_or(DEFAULT_ADDRESS))?;
    Ok(std::sync::Arc::new(registry))
});

/// `--config-source etcd://HOST:PORT/PREFIX` builds an [`EtcdSource`].
#[linkme::distributed_slice(rmicro::config::source::SOURCES)]
static SOURCE: (&str, rmicro::config::source::SourceFactory) = ("etcd", |address, prefix| {
    Ok(std::sync::Arc::new(EtcdSource::new(address, prefix)?))
});
