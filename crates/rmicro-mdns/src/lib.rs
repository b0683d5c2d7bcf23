//! mDNS service discovery for rmicro: LAN discovery with no server, in go-micro's
//! mDNS registry format, so rmicro and go-micro services on one LAN see each other.
//!
//! Each node is announced as `<node-id>.<service>.micro.` (go-micro's `micro`
//! domain, not `local`): a PTR from `<service>.micro.`, an SRV with its port, an A
//! (or AAAA) record with its IP, and a TXT record holding hex(zlib(JSON
//! `{Service, Version, Endpoints, Metadata}`)) split into 255-byte strings. Every
//! service also answers `_services.micro.` so it can be listed. Lookups send a
//! query to 224.0.0.251:5353 on each interface and gather answers for a short
//! window (100 ms by default, as go-micro).
//!
//! `--registry mdns` works in any program this crate is linked into (depend on the
//! `rmicro` facade with feature `mdns`, or on this crate): nothing to call at start.
//! The optional `--registry-address` lists the IPv4 addresses of the interfaces to
//! use.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rmicro_mdns as _; // only needed when nothing else of the crate is used
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter", "--registry", "mdns"])
//!     .build()?;
//! assert!(service.registry().describe().starts_with("mdns://"));
//! # Ok(()) }
//! ```
//!
//! Limits: multicast must reach the peers (one LAN segment; many container and
//! cloud networks drop it — use the local, etcd or Consul registry there), and a
//! lookup always waits for its window to close.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod dns;
mod registry;

pub use registry::{DEFAULT_DOMAIN, DEFAULT_TIMEOUT, GROUP, MdnsRegistry, PORT};

/// `--registry mdns` (and `MICRO_REGISTRY=mdns`) builds an [`MdnsRegistry`] in any
/// binary this crate is linked into; `--registry-address` may list interface IPv4
/// addresses (comma-separated) instead of every non-loopback interface.
#[linkme::distributed_slice(rmicro::registry::REGISTRIES)]
static REGISTRY: (&str, rmicro::registry::Factory) = ("mdns", |address| {
    let registry = match address {
        Some(list) => MdnsRegistry::on_interfaces(list)?,
        None => MdnsRegistry::new(),
    };
    Ok(std::sync::Arc::new(registry))
});
