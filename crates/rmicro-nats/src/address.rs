//! `--broker nats` / `--broker nats-core`: the address format and the factories the
//! linker collects.

use crate::{Mode, NatsBroker, Settings};
use rmicro::broker::{BrokerAddress, BrokerError};
use rmicro::transport::{LINK_TLS_OPTIONS, LinkTls};
use std::sync::Arc;
use std::time::Duration;

/// The address used without `--broker-address`.
pub const DEFAULT_ADDRESS: &str = "nats://127.0.0.1:4222";

/// Builds a broker from `--broker-address`:
/// `[nats://|tls://][user:pass@|token@]host[:4222][,nats://…][?ack_wait=30s]` (a
/// bare `host:port` works; see [`rmicro::broker::BrokerAddress`]). TLS: `tls://`,
/// or the options `tls_ca=FILE`, `tls_cert=FILE`, `tls_key=FILE`,
/// `tls_server_name=NAME` ([`LinkTls::from_options`]); a credentials file (JWT and
/// NKey seed): `creds=FILE`.
pub fn from_address(address: Option<&str>, mode: Mode) -> Result<NatsBroker, BrokerError> {
    let mut parsed = BrokerAddress::parse(address.unwrap_or(DEFAULT_ADDRESS), "nats", 4222)?;
    let ack_wait = match parsed.take("ack_wait") {
        Some(value) => {
            rmicro::cmd::parse_duration(&value).map_err(|e| parsed.error("read the address", e))?
        }
        None => Duration::from_secs(30),
    };
    let tls = LinkTls::from_options(|key| parsed.take(key))
        .map_err(|e| parsed.error("read the address", e))?;
    let credentials = parsed.take("creds");
    let tls = match (tls, parsed.scheme()) {
        (Some(tls), _) => Some(tls),
        (None, "tls") => Some(LinkTls::new()),
        (None, _) => None,
    };
    parsed.finish(&format!(
        "ack_wait=DURATION, creds=FILE, {LINK_TLS_OPTIONS}"
    ))?;
    let mut broker = NatsBroker::with(Settings {
        address: parsed.url(),
        mode,
        ack_wait,
        tls: None,
        credentials: None,
    });
    if let Some(tls) = tls {
        broker = broker.with_tls(tls);
    }
    if let Some(path) = credentials {
        broker = broker.with_credentials_file(path);
    }
    Ok(broker)
}

/// `--broker nats` (JetStream) in any binary this crate is linked into; the address
/// defaults to [`DEFAULT_ADDRESS`] (see [`from_address`]).
#[linkme::distributed_slice(rmicro::broker::BROKERS)]
static JETSTREAM: (&str, rmicro::broker::Factory) = ("nats", |address| {
    Ok(Arc::new(from_address(address, Mode::JetStream)?))
});

/// `--broker nats-core` (core NATS, at-most-once).
#[linkme::distributed_slice(rmicro::broker::BROKERS)]
static CORE: (&str, rmicro::broker::Factory) = ("nats-core", |address| {
    Ok(Arc::new(from_address(address, Mode::Core)?))
});
