//! Where a call goes: a per-call address, a static route, a node the selector
//! picks, or the name itself when it is a `host:port`; and the cached channel to it.

use super::{CLIENT_ID, ClientOptions};
use crate::errors::Error;
use crate::selector::{SelectOptions, Selected, Selector};
use crate::transport::{Channel, connect_lazy};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Resolves names and keeps one channel per address; shared by a client's stacks.
pub(crate) struct Resolver {
    pub(crate) options: ClientOptions,
    pub(crate) selector: Option<Arc<Selector>>,
    channels: RwLock<HashMap<String, Channel>>,
}

/// Whether `name` is an address to dial rather than a service to look up.
pub(crate) fn is_address(name: &str) -> bool {
    name.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

impl Resolver {
    pub(crate) fn new(options: ClientOptions, selector: Option<Arc<Selector>>) -> Self {
        Resolver {
            options,
            selector,
            channels: RwLock::new(HashMap::new()),
        }
    }

    /// Where a call to `service` goes.
    pub(crate) async fn resolve(
        &self,
        service: &str,
        address: Option<&str>,
        select: &SelectOptions,
    ) -> Result<(Arc<str>, Option<Selected>), Error> {
        if let Some(address) = address {
            return Ok((Arc::from(address), None));
        }
        if let Some(address) = self.options.routes.get(service) {
            return Ok((Arc::from(address.as_str()), None));
        }
        // A `host:port` target is dialled as it is: no registry lookup, no watch.
        if is_address(service) {
            return Ok((Arc::from(service), None));
        }
        if let Some(selector) = &self.selector {
            return match selector.select(service, select).await {
                Ok(selected) => Ok((selected.address().clone(), Some(selected))),
                Err(err) => Err(Error::unavailable(CLIENT_ID, err.to_string())),
            };
        }
        Err(Error::new(
            CLIENT_ID,
            503,
            format!(
                "service `{service}` has no known address: give the call an `.address(..)`, \
                 route it with `client.with_route(\"{service}\", \"host:port\")`, or use a registry"
            ),
        ))
    }

    /// Forgets the channel to `address` (its node is unreachable), so channels of
    /// departed nodes do not pile up; a later call dials afresh.
    pub(crate) fn evict(&self, address: &str) {
        crate::sync::write(&self.channels).remove(address);
    }

    /// How many channels are cached.
    pub(crate) fn cached_channels(&self) -> usize {
        crate::sync::read(&self.channels).len()
    }

    /// The shared channel to `address`, dialled lazily on first use.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, Error> {
        if let Some(channel) = crate::sync::read(&self.channels).get(address) {
            return Ok(channel.clone());
        }
        let channel = connect_lazy(address, &self.options.channel)
            .map_err(|e| Error::bad_request(CLIENT_ID, e.to_string()))?;
        Ok(crate::sync::write(&self.channels)
            .entry(address.to_owned())
            .or_insert(channel)
            .clone())
    }
}
