//! What one listener lets its clients hold: connections, streams, header bytes and
//! time. Every limit has a safe default, so a server started with no flags is not
//! at the mercy of a hostile or broken client (slowloris, stream floods, rapid
//! resets, huge header blocks), and each can be changed by a flag.

use std::time::Duration;

/// Limits on the connections a server accepts and what each may do.
///
/// The defaults are safe for a service on an internal network and generous for
/// well-behaved gRPC clients; the `--server-*` flags (see [`crate::cmd::Flags`])
/// change them.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use std::time::Duration;
/// let limits = rmicro::transport::ConnectionLimits {
///     max_connections: 2_000,
///     idle_timeout: Some(Duration::from_secs(60)),
///     ..Default::default()
/// };
/// assert_eq!(limits.max_concurrent_streams, 200);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once on this listener; a connection beyond it is closed
    /// as soon as it is accepted (so its client fails fast and can pick another
    /// node), and a warning says how many were refused. Default 10 000.
    pub max_connections: usize,
    /// Time a new connection has to finish its TLS handshake and send the HTTP/2
    /// connection preface; past it the connection is closed (a slowloris client
    /// holds nothing for longer). Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection with no call in flight and none started for this long is told
    /// to go away (HTTP/2 GOAWAY) and closed; it also bounds a client that never
    /// finishes a request's headers. `None` keeps idle connections forever.
    /// Default 5 minutes (grpc-go's `MaxConnectionIdle` in spirit).
    pub idle_timeout: Option<Duration>,
    /// Streams (calls) a client may have open at once on one connection, announced
    /// in SETTINGS_MAX_CONCURRENT_STREAMS; one more is refused with REFUSED_STREAM,
    /// which a client may retry. Default 200.
    pub max_concurrent_streams: u32,
    /// Largest header list (metadata) a request may carry, in bytes, announced in
    /// SETTINGS_MAX_HEADER_LIST_SIZE; a larger one is refused. Default 16 KiB.
    pub max_header_list_size: u32,
    /// Streams a client may open and reset before the server has taken them up
    /// (CVE-2023-44487, "rapid reset"); beyond it the connection is closed with
    /// GOAWAY ENHANCE_YOUR_CALM. Default 20.
    pub max_pending_resets: usize,
    /// Streams the server may reset for the client's protocol errors before it
    /// closes the connection. Default 1024.
    pub max_error_resets: usize,
    /// Send an HTTP/2 PING on a connection silent for this long, to find peers that
    /// vanished without closing; `None` never pings. Default `None`: with pings on,
    /// hyper notes every frame's arrival under a lock (measured: +2.5 % of the
    /// server's instructions per call), so peers that vanish are found by TCP
    /// keepalive instead ([`ConnectionLimits::tcp_keepalive`]).
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    /// Default 20 s.
    pub keepalive_timeout: Duration,
    /// TCP keepalive: the kernel probes a connection silent for this long and
    /// drops it when the peer is gone, at no cost per call; `None` leaves the
    /// socket's default (off). Default 2 hours (grpc-go's keepalive time).
    pub tcp_keepalive: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            max_concurrent_streams: 200,
            max_header_list_size: 16 * 1024,
            max_pending_resets: 20,
            max_error_resets: 1024,
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(2 * 60 * 60)),
        }
    }
}

impl ConnectionLimits {
    /// Sets TCP keepalive on an accepted socket (see the field).
    pub(crate) fn keep_alive(&self, stream: &tokio::net::TcpStream) {
        if let Some(idle) = self.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            if let Err(err) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
                tracing::debug!(error = %err, "cannot set TCP keepalive");
            }
        }
    }

    /// hyper's HTTP/2 server settings for these limits.
    pub(crate) fn http2(&self) -> hyper::server::conn::http2::Builder<super::BoxingExecutor> {
        let mut http2 = hyper::server::conn::http2::Builder::new(super::BoxingExecutor);
        http2
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .max_pending_accept_reset_streams(self.max_pending_resets)
            .max_local_error_reset_streams(self.max_error_resets)
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
        http2
    }
}
