//! A small client for Consul's HTTP API: requests with a timeout, the ACL token
//! header, and blocking queries (`index` / `wait`, `X-Consul-Index`).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// How long a non-blocking request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Consul request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsulError {
    /// The address could not be used.
    #[error("bad Consul address `{address}`: {detail}")]
    BadAddress {
        /// What was given.
        address: String,
        /// Why it is unusable.
        detail: String,
    },
    /// Consul could not be reached or did not answer in time.
    #[error("consul {address}: {operation} failed: {detail}")]
    Call {
        /// The agent's address.
        address: String,
        /// What was attempted (`PUT /v1/agent/service/register`, …).
        operation: String,
        /// The transport error or timeout.
        detail: String,
    },
    /// Consul answered with an error status.
    #[error("consul {address}: {operation} returned {status}: {body}")]
    Status {
        /// The agent's address.
        address: String,
        /// What was attempted.
        operation: String,
        /// The HTTP status.
        status: u16,
        /// Consul's explanation (its response body).
        body: String,
    },
}

impl ConsulError {
    /// The HTTP status Consul answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConsulError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `X-Consul-Index`, for the next blocking query.
    pub index: Option<u64>,
    /// The response body.
    pub body: Bytes,
    /// False when Consul answered 404 to a [`ConsulClient::get_optional`] (nothing
    /// there yet; `index` still tells where to block from).
    pub found: bool,
}

/// A client for one Consul agent. Cheap to clone (connections are pooled).
///
/// The ACL token comes from `CONSUL_HTTP_TOKEN` unless set with
/// [`with_token`](Self::with_token).
///
/// ```no_run
/// # async fn demo() -> Result<(), rmicro_consul::ConsulError> {
/// let consul = rmicro_consul::ConsulClient::new("127.0.0.1:8500")?;
/// let reply = consul.get("/v1/catalog/services", None).await?;
/// println!("{}", String::from_utf8_lossy(&reply.body));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConsulClient {
    address: String,
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsulClient({})", self.address)
    }
}

impl ConsulClient {
    /// A client for the agent at `address` (`host:port` or `http://host:port`).
    pub fn new(address: &str) -> Result<Self, ConsulError> {
        let bad = |detail: &str| ConsulError::BadAddress {
            address: address.to_owned(),
            detail: detail.to_owned(),
        };
        let trimmed = address.trim().trim_end_matches('/');
        if trimmed.starts_with("https://") {
            return Err(bad("HTTPS to Consul is not supported yet; use http://"));
        }
        let host = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("consul://"))
            .unwrap_or(trimmed);
        if host.is_empty() || host.contains('/') {
            return Err(bad("expected host:port"));
        }
        let base = format!("http://{host}");
        base.parse::<http::Uri>()
            .map_err(|e| bad(&format!("expected host:port ({e})")))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Ok(ConsulClient {
            address: host.to_owned(),
            base,
            token: std::env::var("CONSUL_HTTP_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            timeout: DEFAULT_TIMEOUT,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends `token` as `X-Consul-Token` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets how long a non-blocking request may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The agent's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `GET path` (with its query). With `blocking = Some((index, wait))` it is a
    /// blocking query that Consul holds until the index passes `index` or `wait` ends.
    pub async fn get(
        &self,
        path: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<Reply, ConsulError> {
        self.get_inner(path, blocking, false).await
    }

    /// Like [`get`](Self::get), but a 404 (e.g. no key under a KV prefix yet) is an
    /// answer with `found: false` rather than an error.
    pub async fn get_optional(
        &self,
        path: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<Reply, ConsulError> {
        self.get_inner(path, blocking, true).await
    }

    async fn get_inner(
        &self,
        path: &str,
        blocking: Option<(u64, Duration)>,
        missing_ok: bool,
    ) -> Result<Reply, ConsulError> {
        match blocking {
            Some((index, wait)) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                let path = format!("{path}{sep}index={index}&wait={}", go_duration(wait));
                // Consul adds up to wait/16 of jitter.
                let limit = self.timeout + wait + wait / 16;
                self.send(Method::GET, &path, None, limit, missing_ok).await
            }
            None => {
                self.send(Method::GET, path, None, self.timeout, missing_ok)
                    .await
            }
        }
    }

    /// `PUT path` with an optional JSON body.
    pub async fn put(&self, path: &str, body: Option<Vec<u8>>) -> Result<Reply, ConsulError> {
        self.send(Method::PUT, path, body, self.timeout, false)
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Reply, ConsulError> {
        self.send(Method::DELETE, path, None, self.timeout, false)
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        limit: Duration,
        missing_ok: bool,
    ) -> Result<Reply, ConsulError> {
        let operation = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let failed = |detail: String| ConsulError::Call {
            address: self.address.clone(),
            operation: operation.clone(),
            detail,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| failed(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    detail = format!("{detail}: {cause}");
                    source = cause.source();
                }
                failed(detail)
            })?;
            let status = response.status();
            let index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| failed(format!("reading the response: {e}")))?
                .to_bytes();
            Ok::<_, ConsulError>((status, index, body))
        };
        let (status, index, body) = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {limit:?}")))??;
        if status == StatusCode::NOT_FOUND && missing_ok {
            return Ok(Reply {
                index,
                body: Bytes::new(),
                found: false,
            });
        }
        if status != StatusCode::OK {
            return Err(ConsulError::Status {
                address: self.address.clone(),
                operation,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(Reply {
            index,
            body,
            found: true,
        })
    }
}

/// Formats `d` the way Go's `time.Duration` parses it (`90s`, `1500ms`).
pub fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Parses a Go duration string (`1m5s`, `1.5s`, `500ms`, `2h`), as Consul does.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Percent-encodes one path segment (a service name, a check id, a key part).
pub fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b':');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_round_trip() {
        assert_eq!(go_duration(Duration::from_secs(65)), "65s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_go_duration("1m5s"), Some(Duration::from_secs(65)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None, "a unit is required");
        assert_eq!(parse_go_duration("5 parsecs"), None);
    }

    #[test]
    fn addresses_are_checked() {
        assert!(ConsulClient::new("https://c:8500").is_err());
        assert!(ConsulClient::new("").is_err());
        assert!(ConsulClient::new("c:8500/v1").is_err());
        assert_eq!(
            ConsulClient::new("http://127.0.0.1:8500/")
                .unwrap()
                .address(),
            "127.0.0.1:8500"
        );
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("service:greeter-1"), "service:greeter-1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
