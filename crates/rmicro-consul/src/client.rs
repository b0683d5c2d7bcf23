//! A small client for Consul's HTTP API: requests with a timeout, the ACL token
//! header, and blocking queries (`index` / `wait`, `X-Consul-Index`).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rmicro::transport::{Handshakes, LINK_TLS_OPTIONS, LinkTls};
use std::pin::Pin;
use std::task::{Context, Poll};
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
    /// TLS settings, when the agent speaks HTTPS (for explaining failures).
    tls: Option<LinkTls>,
    /// What the TLS handshakes saw (a certificate asked for and missing).
    handshakes: Handshakes,
    http: Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsulClient({})", self.address)
    }
}

impl ConsulClient {
    /// A client for the agent at `address`: `host:port`, `http://host:port` or
    /// `https://host:port`, then optionally `?tls_ca=FILE&tls_cert=FILE&tls_key=FILE
    /// &tls_server_name=NAME` ([`LinkTls::from_options`]; any of them means HTTPS)
    /// and `token_file=FILE` (the ACL token, read now; `CONSUL_HTTP_TOKEN` and
    /// `CONSUL_HTTP_TOKEN_FILE` are read when the address names none).
    pub fn new(address: &str) -> Result<Self, ConsulError> {
        let bad = |detail: &str| ConsulError::BadAddress {
            address: address.to_owned(),
            detail: detail.to_owned(),
        };
        let (main, query) = address
            .trim()
            .split_once('?')
            .unwrap_or((address.trim(), ""));
        let mut options: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    options.push((key.to_owned(), value.to_owned()))
                }
                _ => return Err(bad(&format!("option `{pair}` is not key=value"))),
            }
        }
        let mut take = |key: &str| {
            let at = options.iter().rposition(|(k, _)| k == key)?;
            Some(options.remove(at).1)
        };
        let tls = LinkTls::from_options(&mut take).map_err(|e| bad(&e.to_string()))?;
        let token_file = take("token_file");
        if let Some((key, _)) = options.first() {
            return Err(bad(&format!(
                "unknown option `{key}`; Consul takes token_file=FILE, {LINK_TLS_OPTIONS}"
            )));
        }
        let trimmed = main.trim_end_matches('/');
        let (https, host) = match trimmed.strip_prefix("https://") {
            Some(host) => (true, host),
            None => (
                false,
                trimmed
                    .strip_prefix("http://")
                    .or_else(|| trimmed.strip_prefix("consul://"))
                    .unwrap_or(trimmed),
            ),
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("expected host:port"));
        }
        let tls = match (tls, https) {
            (Some(tls), _) => Some(tls),
            (None, true) => Some(LinkTls::new()),
            (None, false) => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{host}");
        base.parse::<http::Uri>()
            .map_err(|e| bad(&format!("expected host:port ({e})")))?;
        let token_file = token_file.or_else(|| {
            std::env::var("CONSUL_HTTP_TOKEN_FILE")
                .ok()
                .filter(|f| !f.is_empty())
        });
        let token = match token_file {
            Some(file) => {
                let token = std::fs::read_to_string(&file)
                    .map_err(|e| bad(&format!("cannot read the ACL token file {file}: {e}")))?;
                Some(token.trim().to_owned()).filter(|t| !t.is_empty())
            }
            None => std::env::var("CONSUL_HTTP_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        http.enforce_http(false);
        let connector = match &tls {
            Some(tls) => {
                let (config, handshakes) = tls
                    .observed_client_config(&[b"http/1.1"])
                    .map_err(|e| bad(&e.to_string()))?;
                Connector {
                    http,
                    tls: Some((
                        tls.clone(),
                        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
                    )),
                    handshakes,
                }
            }
            None => Connector {
                http,
                tls: None,
                handshakes: Handshakes::default(),
            },
        };
        Ok(ConsulClient {
            address: host.to_owned(),
            base,
            token,
            timeout: DEFAULT_TIMEOUT,
            tls,
            handshakes: connector.handshakes.clone(),
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
                let detail = rmicro::transport::error_chain(&e);
                let plain = LinkTls::default();
                let tls = self.tls.as_ref().unwrap_or(&plain);
                match tls.explain_observed(&self.handshakes, &format!("{detail} {e:?}")) {
                    Some(sentence) if self.tls.is_some() => {
                        failed(format!("{sentence} ({detail})"))
                    }
                    _ => failed(detail),
                }
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
        let tls = ConsulClient::new("https://c:8500").unwrap();
        assert!(tls.tls.is_some() && tls.base.starts_with("https://"));
        assert!(
            ConsulClient::new("c:8500?tls_server_name=consul")
                .unwrap()
                .tls
                .is_some()
        );
        let err = ConsulClient::new("c:8500?dc=eu").unwrap_err().to_string();
        assert!(err.contains("unknown option `dc`"), "{err}");
        let err = ConsulClient::new("c:8500?tls_key=k.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("without tls_cert"), "{err}");
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

/// Dials the agent: plain TCP, or TLS over it through [`LinkTls`]'s rustls
/// configuration (which follows its files).
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Option<(LinkTls, tokio_rustls::TlsConnector)>,
    handshakes: Handshakes,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Io;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = futures_util::future::BoxFuture<'static, Result<Io, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tcp = self.http.call(uri.clone());
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await?;
            let Some((settings, connector)) = tls else {
                return Ok(Io::Plain(tcp));
            };
            let host = uri.host().unwrap_or_default();
            let name = settings.server_name_for(host)?;
            let stream = connector.connect(name, tcp.into_inner()).await?;
            Ok(Io::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection to the agent, plain or TLS.
pub(crate) enum Io {
    /// HTTP.
    Plain(TokioIo<tokio::net::TcpStream>),
    /// HTTPS.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for Io {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}
