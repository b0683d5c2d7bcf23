//! Broker addresses: one grammar and one parser for every adapter.
//!
//! `[scheme://][user[:password]@]host[:port][,[scheme://]host[:port]…][/path][?key=value&…]`
//!
//! A bare `host:port` works for every adapter (the scheme defaults to the
//! adapter's); options after `?` are the adapter's own (`ack_wait=30s`,
//! `client_id=ID`, `exchange=NAME`) and an unknown one is an error that names the
//! known ones. Credentials are kept for connecting and never shown:
//! [`BrokerAddress::redacted`] (what `describe()`, `Debug` and errors print)
//! replaces the password (or a lone token) with `***`.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::broker::BrokerAddress;
//! let mut a = BrokerAddress::parse("amqp://app:s3cret@mq:5672/prod?exchange=events", "amqp", 5672).unwrap();
//! assert_eq!(a.redacted(), "amqp://app:***@mq:5672/prod");
//! assert_eq!(a.url(), "amqp://app:s3cret@mq:5672/prod");
//! assert_eq!(a.take("exchange").as_deref(), Some("events"));
//! a.finish("exchange=NAME").unwrap();
//! assert_eq!(BrokerAddress::parse("127.0.0.1:5672", "amqp", 5672).unwrap().url(), "amqp://127.0.0.1:5672");
//! ```

use super::BrokerError;

/// A parsed broker address: scheme, credentials, hosts and `?key=value` options.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    hosts: Vec<(String, u16)>,
    path: String,
    options: Vec<(String, String)>,
}

impl std::fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Splits `user[:password]@rest`.
fn split_userinfo(s: &str) -> (Option<(&str, Option<&str>)>, &str) {
    match s.rsplit_once('@') {
        Some((userinfo, rest)) => {
            let info = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            (Some(info), rest)
        }
        None => (None, s),
    }
}

impl BrokerAddress {
    /// Parses `address`; `scheme` and `default_port` fill what it leaves out.
    pub fn parse(address: &str, scheme: &str, default_port: u16) -> Result<Self, BrokerError> {
        let address = address.trim();
        let (main, query) = address.split_once('?').unwrap_or((address, ""));
        let mut parsed = BrokerAddress {
            scheme: scheme.to_owned(),
            user: None,
            password: None,
            hosts: Vec::new(),
            path: String::new(),
            options: Vec::new(),
        };
        let bad = |parsed: &BrokerAddress, detail: String| BrokerError::Backend {
            broker: parsed.redacted(),
            operation: "read the address".into(),
            detail,
        };
        for (i, part) in main.split(',').enumerate() {
            let part = match part.split_once("://") {
                Some((given, rest)) => {
                    if i == 0 {
                        parsed.scheme = given.to_owned();
                    }
                    rest
                }
                None => part,
            };
            let (userinfo, rest) = split_userinfo(part);
            if let Some((user, password)) = userinfo
                && parsed.user.is_none()
            {
                parsed.user = Some(user.to_owned());
                parsed.password = password.map(str::to_owned);
            }
            let (hostport, path) = match rest.find('/') {
                Some(at) => rest.split_at(at),
                None => (rest, ""),
            };
            if !path.is_empty() {
                parsed.path = path.to_owned();
            }
            let (host, port) = match hostport.rsplit_once(':') {
                // `[::1]:4222` and `host:4222`; a bare IPv6 address has no port.
                Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => {
                    (host, port.parse::<u16>().unwrap_or(default_port))
                }
                Some((_, port)) if !hostport.contains("::") => {
                    return Err(bad(&parsed, format!("`{port}` is not a port number")));
                }
                _ => (hostport, default_port),
            };
            if host.is_empty() {
                return Err(bad(
                    &parsed,
                    format!(
                        "no host in `{}`; expected [scheme://]host[:port]",
                        redact_str(address)
                    ),
                ));
            }
            parsed.hosts.push((host.to_owned(), port));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    parsed.options.push((key.to_owned(), value.to_owned()))
                }
                _ => return Err(bad(&parsed, format!("option `{pair}` is not key=value"))),
            }
        }
        Ok(parsed)
    }

    /// The scheme (`amqp`, `redis`, `nats`, `mqtt`).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The user name, if one was given.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password (or a NATS token given without a user), if one was given.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The servers, `(host, port)`, in the order given.
    pub fn hosts(&self) -> &[(String, u16)] {
        &self.hosts
    }

    /// The path after the first server (`/vhost`, `/0`), or empty.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn render(&self, secret: bool) -> String {
        let userinfo = match (&self.user, &self.password) {
            (None, _) => String::new(),
            (Some(user), None) if secret => format!("{user}@"),
            (Some(_), None) => "***@".to_owned(),
            (Some(user), Some(password)) if secret => format!("{user}:{password}@"),
            (Some(user), Some(_)) => format!("{user}:***@"),
        };
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, (host, port))| {
                let info = if i == 0 || secret { &userinfo[..] } else { "" };
                let path = if i == self.hosts.len() - 1 {
                    &self.path[..]
                } else {
                    ""
                };
                format!("{}://{info}{host}:{port}{path}", self.scheme)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address to connect with, credentials included (never log it).
    pub fn url(&self) -> String {
        self.render(true)
    }

    /// One URL per server, credentials included (for clients that take a list).
    pub fn urls(&self) -> Vec<String> {
        let mut one = self.clone();
        self.hosts
            .iter()
            .map(|host| {
                one.hosts = vec![host.clone()];
                one.url()
            })
            .collect()
    }

    /// The same address without user name and password, for client libraries
    /// that take credentials separately (and might log the URLs they dial).
    pub fn without_credentials(&self) -> Self {
        BrokerAddress {
            user: None,
            password: None,
            ..self.clone()
        }
    }

    /// The address with its password (or token) replaced by `***`: for
    /// `describe()`, `Debug` and error messages.
    pub fn redacted(&self) -> String {
        self.render(false)
    }

    /// Takes the option `key` (the last one given wins).
    pub fn take(&mut self, key: &str) -> Option<String> {
        let mut found = None;
        self.options.retain(|(k, v)| {
            if k == key {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found
    }

    /// Fails if an option was not taken; `known` lists the adapter's options for
    /// the message (`"ack_wait=DURATION"`).
    pub fn finish(&self, known: &str) -> Result<(), BrokerError> {
        match self.options.first() {
            None => Ok(()),
            Some((key, value)) => Err(BrokerError::Backend {
                broker: self.redacted(),
                operation: "read the address".into(),
                detail: format!("unknown option `{key}={value}`; known: {known}"),
            }),
        }
    }

    /// A backend error about this broker (named by its redacted address).
    pub fn error(
        &self,
        operation: impl Into<String>,
        detail: impl std::fmt::Display,
    ) -> BrokerError {
        BrokerError::backend(self.redacted(), operation, redact_str(&detail.to_string()))
    }
}

/// Hides the password of every `scheme://user:password@` in `text` (error texts of
/// client libraries sometimes repeat the URL they were given).
pub fn redact_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '/' || c == ',' || c == '`' || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                match userinfo.split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***@")),
                    None => out.push_str("***@"),
                }
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_gets_the_adapters_scheme() {
        for (scheme, port) in [
            ("amqp", 5672),
            ("redis", 6379),
            ("nats", 4222),
            ("mqtt", 1883),
        ] {
            let a = BrokerAddress::parse("127.0.0.1:9999", scheme, port).unwrap();
            assert_eq!(a.url(), format!("{scheme}://127.0.0.1:9999"));
            let a = BrokerAddress::parse("broker.local", scheme, port).unwrap();
            assert_eq!(a.url(), format!("{scheme}://broker.local:{port}"));
        }
    }

    #[test]
    fn credentials_are_kept_for_connecting_and_hidden_everywhere_else() {
        let a = BrokerAddress::parse("redis://:hunter2@db:6379/0", "redis", 6379).unwrap();
        assert_eq!(a.url(), "redis://:hunter2@db:6379/0");
        assert_eq!(a.redacted(), "redis://:***@db:6379/0");
        assert!(!format!("{a:?}").contains("hunter2"));
        let a = BrokerAddress::parse("nats://tok3n@a:4222,nats://b:4223", "nats", 4222).unwrap();
        assert_eq!(a.redacted(), "nats://***@a:4222,nats://b:4223");
        assert_eq!(a.urls(), ["nats://tok3n@a:4222", "nats://tok3n@b:4223"]);
        let err = a
            .error("connect", "cannot reach nats://tok3n@a:4222")
            .to_string();
        assert!(!err.contains("tok3n"), "{err}");
        assert_eq!(
            redact_str("failed: amqp://u:p4ss@h:5672/v and redis://x@y"),
            "failed: amqp://u:***@h:5672/v and redis://***@y"
        );
    }

    #[test]
    fn options_are_taken_and_unknown_ones_named() {
        let mut a =
            BrokerAddress::parse("nats://h:4222?ack_wait=2s&bogus=1", "nats", 4222).unwrap();
        assert_eq!(a.take("ack_wait").as_deref(), Some("2s"));
        let err = a.finish("ack_wait=DURATION").unwrap_err().to_string();
        assert!(
            err.contains("unknown option `bogus=1`; known: ack_wait=DURATION"),
            "{err}"
        );
        assert!(BrokerAddress::parse("h:notaport", "nats", 4222).is_err());
        assert!(BrokerAddress::parse("nats://:4222", "nats", 4222).is_err());
        assert!(BrokerAddress::parse("h?novalue", "nats", 4222).is_err());
    }
}
