//! What a handler wrapper knows about the call it wraps: [`CallInfo`] in the request's
//! extensions, the [`Peer`] that sent it, and how to hand values on to the handler.

use crate::codec::Format;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// The other end of a connection: its socket address and, over mutual TLS, the
/// identity in the certificate it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    address: SocketAddr,
    identity: Option<PeerIdentity>,
}

impl Peer {
    /// A peer at `address` that presented no client certificate.
    pub fn new(address: SocketAddr) -> Self {
        Peer {
            address,
            identity: None,
        }
    }

    /// The same peer with the identity of its client certificate.
    pub fn with_identity(mut self, identity: PeerIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The peer's socket address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The identity of the certificate the peer presented (mutual TLS only).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }
}

/// Who a client certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// The certificate's subject, as an RFC 4514 string (`CN=billing,O=acme`).
    pub subject: String,
    /// Its subject alternative names: DNS names, URIs (SPIFFE ids), e-mail
    /// addresses and IP addresses, as text.
    pub sans: Vec<String>,
}

impl PeerIdentity {
    /// Reads subject and SANs from a DER certificate; `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                        sans.push((*s).to_owned())
                    }
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            sans.push(std::net::Ipv4Addr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            sans.push(std::net::Ipv6Addr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(PeerIdentity {
            subject: cert.subject().to_string(),
            sans,
        })
    }
}

/// What an incoming call is, in the request's extensions for handler wrappers to read.
///
/// The server attaches it before the first wrapper runs. A wrapper's own unit tests
/// can build one:
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::wrapper::{CallInfo, Peer};
/// let info = CallInfo::new("greeter", "Greeter.SayHello", "/greeter.v1.Greeter/SayHello")
///     .with_peer(Peer::new("127.0.0.1:4000".parse().unwrap()));
/// let mut request = http::Request::new(rmicro::transport::Body::default());
/// request.extensions_mut().insert(info);
/// # assert_eq!(request.extensions().get::<CallInfo>().unwrap().endpoint(), "Greeter.SayHello");
/// ```
#[derive(Debug, Clone)]
pub struct CallInfo {
    service: Arc<str>,
    endpoint: &'static str,
    path: &'static str,
    format: Format,
    deadline: Option<Instant>,
    peer: Option<Arc<Peer>>,
    messages: Arc<super::MessageCounts>,
    /// Where the server routes the call, set by its router (one extension for both).
    pub(crate) route: Option<crate::server::router::RouteTarget>,
}

impl CallInfo {
    /// A call to `endpoint` (`Greeter.SayHello`) at `path` of `service`, protobuf,
    /// without deadline or peer.
    pub fn new(service: impl Into<Arc<str>>, endpoint: &'static str, path: &'static str) -> Self {
        CallInfo {
            service: service.into(),
            endpoint,
            path,
            format: Format::Proto,
            deadline: None,
            peer: None,
            messages: Arc::default(),
            route: None,
        }
    }

    /// The same call with this codec.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The same call with this deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The same call from this peer.
    pub fn with_peer(mut self, peer: Peer) -> Self {
        self.peer = Some(Arc::new(peer));
        self
    }

    pub(crate) fn with_shared_peer(mut self, peer: Option<Arc<Peer>>) -> Self {
        self.peer = peer;
        self
    }

    pub(crate) fn with_optional_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The rmicro service name (the server's own).
    pub fn service(&self) -> &str {
        &self.service
    }

    pub(crate) fn service_arc(&self) -> &Arc<str> {
        &self.service
    }

    /// go-micro endpoint name (`Greeter.SayHello`).
    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    /// gRPC path (`/greeter.v1.Greeter/SayHello`).
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// The codec the caller asked for.
    pub fn format(&self) -> Format {
        self.format
    }

    /// When the caller stops waiting, if it set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Messages and bytes received (requests) and sent (replies) so far.
    pub fn messages(&self) -> &Arc<super::MessageCounts> {
        &self.messages
    }

    /// Who sent the call (absent only for calls built by hand).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_deref()
    }
}
