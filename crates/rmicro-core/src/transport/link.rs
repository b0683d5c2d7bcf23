//! TLS for rmicro's links to outside servers — etcd, Consul, NATS, Redis, RabbitMQ,
//! MQTT: which CA to trust, which client certificate to present (mutual TLS) and
//! which name to verify, read from PEM files and read again when they change.
//!
//! Every adapter takes the same options in its address (`?tls_ca=FILE&tls_cert=FILE&
//! tls_key=FILE&tls_server_name=NAME`, see [`LinkTls::from_options`]) and hands the
//! rustls configuration from [`LinkTls::client_config`] to its client library. That
//! configuration looks at the files again (at most every
//! [`ServerTls::reload_every`](super::ServerTls::reload_every)) whenever a connection
//! is made: a rotated certificate is used from the next (re)connection on, without a
//! restart, and connections already open keep working. A file that changes into
//! something unusable is refused with a warning and the previous material kept.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::transport::LinkTls;
//! // What `rediss://cache:6380?tls_ca=/etc/ca.pem` leaves for the TLS options:
//! let mut options = vec![("tls_ca".to_owned(), "/etc/ca.pem".to_owned())];
//! let tls = LinkTls::from_options(|key| {
//!     let at = options.iter().position(|(k, _)| k == key)?;
//!     Some(options.remove(at).1)
//! })
//! .unwrap()
//! .expect("a TLS option was given");
//! assert_eq!(tls.ca_file(), Some(std::path::Path::new("/etc/ca.pem")));
//! // Reading a missing file fails with a sentence naming it.
//! let err = tls.client_config(&[]).unwrap_err().to_string();
//! assert!(err.contains("/etc/ca.pem"), "{err}");
//! ```

use super::tls::{TlsError, certificates, read};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

/// The address options [`LinkTls::from_options`] understands, for error messages
/// that list an adapter's options.
pub const LINK_TLS_OPTIONS: &str = "tls_ca=FILE, tls_cert=FILE, tls_key=FILE, tls_server_name=NAME";

/// What a link without a client certificate is told when the server wants one.
const MISSING_CERTIFICATE: &str = "the server requires a client certificate: give one (tls_cert=FILE&tls_key=FILE in the address)";

/// TLS settings of a link to an outside server: the CA to trust (the system's
/// WebPKI roots when none is given), an optional client identity, and the name to
/// verify when it differs from the host dialled.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LinkTls {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Paths only: never what is in the key file.
        f.debug_struct("LinkTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl LinkTls {
    /// TLS trusting the WebPKI roots, with no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificate(s) in this PEM file instead of the WebPKI roots.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Presents this certificate chain and key (PEM files) to servers that ask for
    /// a client certificate.
    pub fn with_identity_files(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Verifies this name in the server's certificate instead of the host dialled.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The CA file, if one was given.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The name to verify, if one was given.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The client certificate and key files, if given (for client libraries that
    /// take PEM bytes rather than a rustls configuration).
    pub fn identity_files(&self) -> Option<(&Path, &Path)> {
        self.cert.as_deref().zip(self.key.as_deref())
    }

    /// Whether a client certificate is configured.
    pub fn has_identity(&self) -> bool {
        self.cert.is_some()
    }

    /// Reads the TLS options out of an address's options: `take(key)` removes and
    /// returns one (as [`BrokerAddress::take`](crate::broker::BrokerAddress::take)
    /// does). `Ok(None)` when none was given; a certificate without its key (or a
    /// key without its certificate) is an error.
    pub fn from_options(
        mut take: impl FnMut(&str) -> Option<String>,
    ) -> Result<Option<LinkTls>, TlsError> {
        let non_empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        let tls = LinkTls {
            ca: non_empty(take("tls_ca")).map(PathBuf::from),
            cert: non_empty(take("tls_cert")).map(PathBuf::from),
            key: non_empty(take("tls_key")).map(PathBuf::from),
            server_name: non_empty(take("tls_server_name")),
        };
        match (&tls.cert, &tls.key) {
            (Some(_), None) => Err(TlsError::Pem {
                what: "client certificate",
                detail: "tls_cert was given without tls_key".into(),
            }),
            (None, Some(_)) => Err(TlsError::Pem {
                what: "private key",
                detail: "tls_key was given without tls_cert".into(),
            }),
            _ if tls == LinkTls::default() => Ok(None),
            _ => Ok(Some(tls)),
        }
    }

    /// The name to verify in the certificate of the server at `host`.
    pub fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_owned()).map_err(|e| TlsError::Pem {
            what: "server name",
            detail: format!("`{name}` is not a DNS name or IP address: {e}"),
        })
    }

    /// A rustls client configuration (ring provider, safe protocol versions)
    /// offering `alpn`, whose CA and client certificate come from the files and
    /// follow them when they change. Fails now, with a sentence naming the file,
    /// if a file cannot be read or used.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        Ok(self.observed_client_config(alpn)?.0)
    }

    /// [`LinkTls::client_config`] and what its handshakes have seen, for client
    /// libraries whose errors lose the TLS cause (see [`Handshakes`]).
    pub fn observed_client_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<(rustls::ClientConfig, Handshakes), TlsError> {
        let handshakes = Handshakes::default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let material = Material::load(self, &provider)?;
        let reloading = Arc::new(Reloading {
            tls: self.clone(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(material)),
            checked: Mutex::new(Instant::now()),
            sessions: RwLock::new(Arc::new(ClientSessionMemoryCache::new(SESSIONS))),
            handshakes: handshakes.clone(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(reloading.clone())
            .with_client_cert_resolver(reloading.clone());
        config.resumption = rustls::client::Resumption::store(reloading);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok((config, handshakes))
    }

    /// A tokio-rustls connector on [`LinkTls::client_config`].
    pub fn connector(&self, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsConnector, TlsError> {
        Ok(tokio_rustls::TlsConnector::from(Arc::new(
            self.client_config(alpn)?,
        )))
    }

    /// Why a connection made with these settings failed, in a sentence, from the
    /// text of the client library's error (see [`error_chain`]); `None` when it was
    /// not a TLS failure rmicro recognises. Knowing whether a client certificate
    /// was given, it tells a missing certificate from a refused one even when the
    /// server's alert does not (Go servers answer both with `bad certificate`).
    pub fn explain(&self, error: &str) -> Option<String> {
        let refused_ours = [
            "alert: BadCertificate",
            "alert: CertificateUnknown",
            "alert: HandshakeFailure",
        ]
        .iter()
        .any(|alert| error.contains(alert));
        match (&self.cert, refused_ours) {
            (None, true) => Some(MISSING_CERTIFICATE.to_owned()),
            (Some(cert), true) => Some(format!(
                "the server refused our client certificate {} (expired, or not signed by a CA it trusts)",
                cert.display()
            )),
            _ => explain_link_failure(error).map(str::to_owned),
        }
    }

    /// [`LinkTls::explain`], sure of a missing client certificate when the
    /// configuration's handshakes saw the server ask for one we lack (see
    /// [`LinkTls::observed_client_config`]): under TLS 1.3 the server's refusal
    /// comes after the handshake and is often lost in a reset connection.
    pub fn explain_observed(&self, handshakes: &Handshakes, error: &str) -> Option<String> {
        if handshakes.certificate_asked_for_and_missing() {
            return Some(MISSING_CERTIFICATE.to_owned());
        }
        self.explain(error)
    }

    /// What the files look like now (size and modification time of each): two
    /// stamps differ when a file was rewritten, for client libraries that take
    /// certificates as bytes and must be rebuilt to follow them.
    pub fn files_stamp(&self) -> TlsFilesStamp {
        TlsFilesStamp(self.stamp())
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .filter_map(|p| p.as_deref())
    }

    fn stamp(&self) -> Vec<Option<(u64, SystemTime)>> {
        self.paths()
            .map(|p| {
                let meta = std::fs::metadata(p).ok()?;
                Some((meta.len(), meta.modified().ok()?))
            })
            .collect()
    }
}

/// The state of a [`LinkTls`]'s files at one moment ([`LinkTls::files_stamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFilesStamp(Vec<Option<(u64, SystemTime)>>);

/// What the files held when last read.
#[derive(Debug)]
struct Material {
    stamp: Vec<Option<(u64, SystemTime)>>,
    verifier: Arc<rustls::client::WebPkiServerVerifier>,
    identity: Option<Arc<CertifiedKey>>,
}

impl Material {
    fn load(
        tls: &LinkTls,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamp = tls.stamp();
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for cert in certificates(&read(ca)?, "CA certificate")? {
                    roots.add(cert).map_err(|e| TlsError::Pem {
                        what: "CA certificate",
                        detail: format!("{}: {e}", ca.display()),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Pem {
            what: "CA certificate",
            detail: e.to_string(),
        })?;
        let identity = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(&read(cert)?, "client certificate")?;
                let key_pem = read(key)?;
                let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
                    .map_err(|e| TlsError::Pem {
                        what: "private key",
                        detail: format!("{}: {e}", key.display()),
                    })?
                    .ok_or_else(|| TlsError::Pem {
                        what: "private key",
                        detail: format!("no PRIVATE KEY block in {}", key.display()),
                    })?;
                let certified = CertifiedKey::from_der(chain, key_der, provider)?;
                Some(Arc::new(certified))
            }
            _ => None,
        };
        Ok(Material {
            stamp,
            verifier,
            identity,
        })
    }
}

/// The verifier and client-certificate resolver of a [`LinkTls`] configuration:
/// both read the current [`Material`], reloaded when the files change.
#[derive(Debug)]
struct Reloading {
    tls: LinkTls,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<Material>>,
    checked: Mutex<Instant>,
    /// Resumable sessions; emptied when the files change, so that a resumed
    /// session does not carry the previous identity past a rotation.
    sessions: RwLock<Arc<ClientSessionMemoryCache>>,
    handshakes: Handshakes,
}

/// What the handshakes of one [`LinkTls`] configuration have seen: whether a
/// server asked for a client certificate that we do not have. A TLS 1.3 server
/// refuses a missing certificate only after the client's side of the handshake
/// is done, and its alert is often lost in a reset connection; this is known
/// for sure.
#[derive(Debug, Clone, Default)]
pub struct Handshakes {
    asked_without_identity: Arc<std::sync::atomic::AtomicBool>,
}

impl Handshakes {
    /// Whether a server asked for a client certificate and we had none to give.
    pub fn certificate_asked_for_and_missing(&self) -> bool {
        self.asked_without_identity
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How many servers' sessions a link remembers (rustls's default).
const SESSIONS: usize = 256;

impl Reloading {
    fn sessions(&self) -> Arc<ClientSessionMemoryCache> {
        crate::sync::read(&self.sessions).clone()
    }

    fn material(&self) -> Arc<Material> {
        self.refresh();
        crate::sync::read(&self.current).clone()
    }

    /// Reads the files again if they changed since the last look (at most every
    /// [`ServerTls::reload_every`](super::ServerTls::reload_every)).
    fn refresh(&self) {
        {
            let Ok(mut checked) = self.checked.try_lock() else {
                return; // another handshake is looking right now
            };
            if checked.elapsed() < super::ServerTls::reload_every() {
                return;
            }
            *checked = Instant::now();
        }
        let stamp = self.tls.stamp();
        if stamp == crate::sync::read(&self.current).stamp {
            return;
        }
        match Material::load(&self.tls, &self.provider) {
            Ok(fresh) => {
                *crate::sync::write(&self.current) = Arc::new(fresh);
                *crate::sync::write(&self.sessions) =
                    Arc::new(ClientSessionMemoryCache::new(SESSIONS));
                tracing::info!(tls = ?self.tls, "TLS files reloaded: new connections use them");
            }
            Err(err) => {
                // Remember the broken stamp so the warning comes once per change.
                let mut current = crate::sync::write(&self.current);
                *current = Arc::new(Material {
                    stamp,
                    verifier: current.verifier.clone(),
                    identity: current.identity.clone(),
                });
                tracing::warn!(
                    tls = ?self.tls,
                    error = %err,
                    "TLS files changed but cannot be used ({err}); still using the previous ones"
                );
            }
        }
    }
}

impl ServerCertVerifier for Reloading {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // `tls_server_name` replaces the dialled name for every client library,
        // including those that cannot be told another one.
        let named = match &self.tls.server_name {
            Some(name) => Some(ServerName::try_from(name.as_str()).map_err(|e| {
                rustls::Error::General(format!("tls_server_name `{name}` is not a name: {e}"))
            })?),
            None => None,
        };
        self.material().verifier.verify_server_cert(
            end_entity,
            intermediates,
            named.as_ref().unwrap_or(server_name),
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientSessionStore for Reloading {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.sessions().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        // Asked as a handshake starts: what the last one saw no longer holds.
        self.handshakes
            .asked_without_identity
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.sessions().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.sessions().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        // A handshake starts here: look at the files before resuming anything.
        self.refresh();
        self.sessions().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.sessions().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.sessions().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.refresh();
        self.sessions().take_tls13_ticket(server_name)
    }
}

impl rustls::client::ResolvesClientCert for Reloading {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // rustls asks only when the server sent a CertificateRequest.
        let identity = self.material().identity.clone();
        self.handshakes
            .asked_without_identity
            .store(identity.is_none(), std::sync::atomic::Ordering::Relaxed);
        identity
    }

    fn has_certs(&self) -> bool {
        // Always asked, so that a server's request is seen even without one.
        true
    }
}

/// The text of `err` and every error under it (`a: b: c`, each line once): client
/// libraries wrap TLS failures in their own errors, and the cause is at the bottom.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// What to say of a link's failed connection: the error chain ([`error_chain`]),
/// led by the sentence of [`LinkTls::explain`] when TLS is the cause (with
/// `tls: None`, as for a plain link, the sentence assumes no client certificate).
pub fn link_failure(tls: Option<&LinkTls>, err: &(dyn std::error::Error + 'static)) -> String {
    let detail = error_chain(err);
    // Some libraries keep the rustls error only in their Debug output.
    let text = format!("{detail} {err:?}");
    let plain = LinkTls::default();
    match tls.unwrap_or(&plain).explain(&text) {
        Some(sentence) => format!("{sentence} ({detail})"),
        None => detail,
    }
}

/// A sentence saying why a link's TLS handshake failed, from the text of the error
/// a client library returned (see [`error_chain`]); `None` when it was not a TLS
/// failure rmicro recognises. The sentences name the address options that fix it.
pub fn explain_link_failure(error: &str) -> Option<&'static str> {
    super::tls::explain_as(error, super::tls::Fixes::Link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Result<Option<LinkTls>, TlsError> {
        let mut pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        LinkTls::from_options(|key| {
            let at = pairs.iter().position(|(k, _)| k == key)?;
            Some(pairs.remove(at).1)
        })
    }

    #[test]
    fn options_are_read_and_checked() {
        assert_eq!(options(&[]).unwrap(), None);
        let tls = options(&[
            ("tls_cert", "c.pem"),
            ("tls_key", "k.pem"),
            ("tls_server_name", "db"),
        ])
        .unwrap()
        .unwrap();
        assert!(tls.has_identity());
        assert_eq!(tls.server_name(), Some("db"));
        let err = options(&[("tls_cert", "c.pem")]).unwrap_err().to_string();
        assert!(err.contains("tls_cert was given without tls_key"), "{err}");
        assert!(format!("{tls:?}").contains("c.pem"));
        assert!(!format!("{tls:?}").contains("k.pem"));
    }

    #[test]
    fn server_names_accept_hosts_and_ips() {
        let tls = LinkTls::new();
        assert!(tls.server_name_for("localhost").is_ok());
        assert!(tls.server_name_for("[::1]").is_ok());
        assert!(tls.server_name_for("bad name").is_err());
        let named = LinkTls::new().with_server_name("etcd.internal");
        assert_eq!(
            named.server_name_for("10.0.0.1").unwrap(),
            ServerName::try_from("etcd.internal").unwrap()
        );
    }

    #[test]
    fn without_a_ca_the_webpki_roots_are_trusted() {
        assert!(LinkTls::new().client_config(&[b"h2"]).is_ok());
    }

    #[test]
    fn link_failures_name_the_options() {
        let sentence =
            explain_link_failure("io: received fatal alert: CertificateRequired").unwrap();
        assert!(sentence.contains("tls_cert"), "{sentence}");
        let sentence = explain_link_failure("invalid peer certificate: UnknownIssuer").unwrap();
        assert!(sentence.contains("tls_ca"), "{sentence}");
    }
}
