//! gRPC over HTTP/2: the listener that serves calls and the channels that make them.
//!
//! Everything rmicro knows about sockets, TLS and HTTP/2 lives here, on hyper and h2;
//! tonic supplies gRPC framing and client channels. Keeping them behind this module
//! means the rest of the crate never names a tonic transport type, so the engine can be
//! swapped (tonic upstream is winding down) without touching services or handlers.
//!
//! Connections are plain h2c unless a certificate and key are configured, in which
//! case the server speaks TLS with ALPN `h2` and clients dial `https`.

pub(crate) mod activity;
mod body;
mod connect;
#[cfg(feature = "auth")]
pub(crate) mod fetch;
pub(crate) mod headers;
mod limits;
mod link;
mod listener;
mod preface;
mod shard;
pub(crate) mod side;
mod timeout;
pub(crate) use timeout::grpc_timeout_header;
pub(crate) mod tls;

pub use connect::{
    Channel, ChannelOptions, InvalidAddress, TransportError, connect_lazy, is_safe_to_retry,
};
pub(crate) use listener::serve;
pub use timeout::{format_grpc_timeout, parse_grpc_timeout};
pub use tls::{ClientAuth, ClientTls, ReloadingAcceptor, ServerTls, TlsError};

pub use body::{Body, BodyError};
pub use limits::ConnectionLimits;
pub use link::{
    Handshakes, LINK_TLS_OPTIONS, LinkTls, TlsFilesStamp, error_chain, explain_link_failure,
    link_failure,
};
pub use preface::{Prefaced, sniff_http};
pub use shard::Shards;

/// Spawns hyper's per-call tasks (a client's two per call, a server's one per
/// stream) boxed: the task then holds a pointer, where a future of hyper's size
/// spawned as it is gets copied at each step of spawning (measured: ~1,800
/// instructions of `memcpy` per task).
#[derive(Clone, Copy)]
pub(crate) struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// The text of `ip` exactly as its `Display` writes it (`127.0.0.1`, `::1`); an
/// IPv4 address without the formatting machinery, which costs several times more.
/// Tracing, rate limits and the gateway call it per call.
///
/// ```
/// use std::net::IpAddr;
/// let ip: IpAddr = "10.0.255.7".parse().unwrap();
/// assert_eq!(rmicro_core::transport::ip_text(ip), "10.0.255.7");
/// ```
pub fn ip_text(ip: std::net::IpAddr) -> String {
    IpText::new(ip).as_str().to_owned()
}

/// [`ip_text`] held on the stack, for callers that copy the text somewhere at
/// once (a span's attribute) and need no `String` of it.
///
/// ```
/// use std::net::IpAddr;
/// let ip: IpAddr = "::1".parse().unwrap();
/// assert_eq!(rmicro_core::transport::IpText::new(ip).as_str(), "::1");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct IpText {
    text: [u8; 45],
    len: u8,
}

impl IpText {
    /// The text of `ip`.
    pub fn new(ip: std::net::IpAddr) -> Self {
        let mut out = IpText {
            text: [0; 45],
            len: 0,
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut at = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.text[at] = b'.';
                        at += 1;
                    }
                    if octet >= 100 {
                        out.text[at] = b'0' + octet / 100;
                        at += 1;
                    }
                    if octet >= 10 {
                        out.text[at] = b'0' + octet / 10 % 10;
                        at += 1;
                    }
                    out.text[at] = b'0' + octet % 10;
                    at += 1;
                }
                out.len = at as u8;
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut cursor = std::io::Cursor::new(&mut out.text[..]);
                // An IPv6 address's text is 45 bytes at most: it always fits.
                let _ = write!(cursor, "{v6}");
                out.len = cursor.position() as u8;
            }
        }
        out
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn ip_text_writes_what_display_writes() {
        for n in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(n, 0, 9, 255),
                Ipv4Addr::new(255, n, 10, 0),
                Ipv4Addr::new(1, 99, n, 100),
                Ipv4Addr::new(200, 7, 77, n),
            ] {
                assert_eq!(super::ip_text(IpAddr::V4(ip)), ip.to_string());
            }
        }
        for ip in [
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::UNSPECIFIED,
            "2001:db8::8a2e:370:7334".parse().unwrap(),
            "::ffff:255.255.255.255".parse().unwrap(),
            "ffff:eeee:dddd:cccc:bbbb:aaaa:9999:8888".parse().unwrap(),
        ] {
            assert_eq!(super::ip_text(IpAddr::V6(ip)), ip.to_string());
        }
    }
}
