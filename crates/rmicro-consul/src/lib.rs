//! Consul for rmicro: a service [registry](ConsulRegistry) compatible with
//! go-micro's Consul registry, a KV config [source](ConsulSource), the small HTTP
//! [client](ConsulClient) under them, and
//! a [test double](testing::ConsulDouble) of the agent API for machines without
//! Consul.
//!
//! `--registry consul` works in any program this crate is linked into: depend on the
//! `rmicro` facade with feature `consul` (or on this crate); nothing to call at start.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rmicro_consul as _; // only needed when nothing else of the crate is used
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter", "--registry", "consul", "--registry-address", "127.0.0.1:8500"])
//!     .build()?;
//! assert_eq!(service.registry().describe(), "consul://127.0.0.1:8500");
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod config;
mod registry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use client::{
    ConsulClient, ConsulError, DEFAULT_TIMEOUT, Reply, go_duration, parse_go_duration, segment,
};
pub use config::ConsulSource;
pub use registry::{ConsulRegistry, DEFAULT_WAIT, encode_tags};

/// Entry points for the fuzz targets in `fuzz/` into the decoding of what Consul
/// returns (untrusted: any process with the agent's token can register anything).
/// Not for applications.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads a `GET /v1/health/service/<name>` body as the registry does: the
    /// services its entries' tags and metadata describe (none when it is not
    /// such a body).
    pub fn health_entries(body: &[u8]) -> Vec<rmicro::registry::Service> {
        crate::registry::decode_health(body).unwrap_or_default()
    }

    /// The health body a fuzz input stands for. Raw: the input itself. Structured,
    /// when it starts with `#`: one tag per line, its kind (`t`, `e`, `v`, `m`)
    /// then the payload go-micro would compress, encoded here as
    /// `<kind>-hex(zlib(payload))` in an otherwise valid body, so that a fuzzer's
    /// mutations reach the JSON inside the tags instead of dying in the hex or
    /// zlib layer.
    pub fn body_of(input: &[u8]) -> Vec<u8> {
        let Some((b'#', lines)) = input.split_first() else {
            return input.to_vec();
        };
        let tags: Vec<String> = lines
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let (&kind, payload) = line.split_first()?;
                matches!(kind, b't' | b'e' | b'v' | b'm').then(|| {
                    format!(
                        "{}-{}",
                        kind as char,
                        rmicro::registry::compact::encode(payload)
                    )
                })
            })
            .collect();
        serde_json::json!([{
            "Node": {"Address": "10.0.0.1"},
            "Service": {
                "ID": "greeter-1",
                "Service": "greeter",
                "Tags": tags,
                "Address": "10.0.0.2",
                "Port": 9000,
            }
        }])
        .to_string()
        .into_bytes()
    }

    /// The service a health entry with `service`'s first node, registered with the
    /// tags [`encode_tags`](crate::encode_tags) gives, reads back as.
    pub fn round_trip(service: &rmicro::registry::Service) -> Option<rmicro::registry::Service> {
        let node = service.nodes.first()?;
        let body = serde_json::json!([{
            "Node": {"Address": "127.0.0.1"},
            "Service": {
                "ID": node.id,
                "Service": service.name,
                "Tags": crate::encode_tags(service, node),
                "Address": "127.0.0.1",
                "Port": 9,
            }
        }]);
        crate::registry::decode_health(body.to_string().as_bytes())
            .ok()?
            .into_iter()
            .next()
    }
}

/// The address used when `--registry consul` is given without `--registry-address`
/// (Consul's own default, also read from `CONSUL_HTTP_ADDR`).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// `--config-source consul://HOST:PORT/PREFIX` builds a [`ConsulSource`] in any
/// binary this crate is linked into.
#[linkme::distributed_slice(rmicro::config::source::SOURCES)]
static SOURCE: (&str, rmicro::config::source::SourceFactory) = ("consul", |address, prefix| {
    Ok(std::sync::Arc::new(ConsulSource::new(address, prefix)?))
});

/// `--registry consul` (and `MICRO_REGISTRY=consul`) builds a [`ConsulRegistry`]
/// (without an address it uses `CONSUL_HTTP_ADDR`, then [`DEFAULT_ADDRESS`]).
#[linkme::distributed_slice(rmicro::registry::REGISTRIES)]
static REGISTRY: (&str, rmicro::registry::Factory) = ("consul", |address| {
    let from_env = std::env::var("CONSUL_HTTP_ADDR").ok();
    registry::shared(address.or(from_env.as_deref()).unwrap_or(DEFAULT_ADDRESS))
});
