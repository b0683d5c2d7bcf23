//! TLS settings for servers and clients (rustls with the `ring` provider): server
//! identities, client-certificate verification (mutual TLS), client identities, and
//! certificates reloaded from their files while serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// A certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read TLS file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM held no usable certificate or key.
    #[error("TLS {what} is not valid PEM: {detail}")]
    Pem {
        /// `certificate`, `private key` or `client CA certificate`.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS certificate and key do not form a valid server identity: {0}")]
    Config(#[from] rustls::Error),
    /// The client CA could not verify client certificates.
    #[error("TLS client CA cannot verify client certificates: {0}")]
    ClientCa(String),
}

/// Whether a server with a client CA requires a certificate of every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientAuth {
    /// A client without a certificate signed by the CA is refused in the handshake.
    #[default]
    Required,
    /// A client may come without a certificate (then it has no peer identity);
    /// one that presents a certificate must present a valid one.
    Optional,
}

/// Where a [`ServerTls`] was read from, so that it can be read again.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Files {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [self.cert.as_path(), self.key.as_path()]
            .into_iter()
            .chain(self.client_ca.as_deref())
    }

    /// Size and modification time of each file: what changes when one is rewritten.
    fn stamp(&self) -> Vec<Option<(u64, SystemTime)>> {
        self.paths()
            .map(|p| {
                let meta = std::fs::metadata(p).ok()?;
                Some((meta.len(), meta.modified().ok()?))
            })
            .collect()
    }
}

/// A server's certificate chain and private key, PEM-encoded, and optionally the CA
/// its clients' certificates must chain to (mutual TLS).
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    client_auth: ClientAuth,
    files: Option<Files>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServerTls")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("client_auth", &self.client_auth)
            .field("cert_file", &self.files.as_ref().map(|f| &f.cert))
            .finish_non_exhaustive()
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

impl ServerTls {
    /// Uses PEM bytes already in memory.
    pub fn from_pem(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        ServerTls {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: None,
            client_auth: ClientAuth::Required,
            files: None,
        }
    }

    /// Reads the certificate chain and key from PEM files. A server started with
    /// them reads them again when they change (see [`ServerTls::reload_every`]).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let mut tls = Self::from_pem(read(cert)?, read(key)?);
        tls.files = Some(Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: None,
        });
        tls.rustls_config(&[])?;
        Ok(tls)
    }

    /// Verifies client certificates against this CA (PEM, one or more
    /// certificates): mutual TLS. Clients must present one unless
    /// [`ClientAuth::Optional`] is set with [`ServerTls::client_auth`].
    pub fn with_client_ca_pem(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.client_ca_pem = Some(ca_pem.into());
        self
    }

    /// Reads the client CA from a PEM file (reloaded with the others).
    pub fn with_client_ca_file(mut self, path: &Path) -> Result<Self, TlsError> {
        self = self.with_client_ca_pem(read(path)?);
        if let Some(files) = &mut self.files {
            files.client_ca = Some(path.to_owned());
        }
        self.rustls_config(&[])?;
        Ok(self)
    }

    /// Whether a client certificate is required or optional (with a client CA).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// How often a server checks its certificate files for changes: every 2 s.
    pub fn reload_every() -> Duration {
        Duration::from_secs(2)
    }

    /// Reads the files again, keeping the other settings.
    fn reread(&self) -> Result<Option<ServerTls>, TlsError> {
        let Some(files) = &self.files else {
            return Ok(None);
        };
        let mut tls = ServerTls::from_pem(read(&files.cert)?, read(&files.key)?);
        tls.client_ca_pem = match &files.client_ca {
            Some(ca) => Some(read(ca)?),
            None => self.client_ca_pem.clone(),
        };
        tls.client_auth = self.client_auth;
        tls.files = Some(files.clone());
        Ok(Some(tls))
    }

    /// The rustls server configuration of this identity (ring provider, safe
    /// protocol versions, client certificates verified against the client CA if
    /// one is set), advertising `alpn` in order of preference — `[b"h2",
    /// b"http/1.1"]` for an HTTP server that speaks both, as the API gateway does.
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = certificates(&self.cert_pem, "certificate")?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_slice())
            .map_err(|e| TlsError::Pem {
                what: "private key",
                detail: e.to_string(),
            })?
            .ok_or_else(|| TlsError::Pem {
                what: "private key",
                detail: "no PRIVATE KEY block found".into(),
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca, "client CA certificate")? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = match self.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::ClientCa(e.to_string()))?,
                )
            }
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The TLS acceptor a listener uses for each new connection, replaced when the
/// certificate files change: connections already open keep the identity they
/// were accepted with, new ones get the new one.
struct Acceptors {
    current: RwLock<tokio_rustls::TlsAcceptor>,
    /// The protocols offered by ALPN, kept for the reloaded configurations.
    alpn: &'static [&'static [u8]],
}

impl Acceptors {
    /// The acceptor of `tls`, offering `alpn`; with files, a task (ended by
    /// aborting the handle) checks them every [`ServerTls::reload_every`].
    fn start(
        tls: &ServerTls,
        alpn: &'static [&'static [u8]],
    ) -> Result<(Arc<Acceptors>, Option<tokio::task::JoinHandle<()>>), TlsError> {
        let acceptors = Arc::new(Acceptors {
            current: RwLock::new(tokio_rustls::TlsAcceptor::from(tls.rustls_config(alpn)?)),
            alpn,
        });
        let watcher = tls.files.as_ref().map(|files| {
            let acceptors = acceptors.clone();
            let tls = tls.clone();
            let mut stamp = files.stamp();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ServerTls::reload_every()).await;
                    let Some(files) = &tls.files else { return };
                    let now = files.stamp();
                    if now == stamp {
                        continue;
                    }
                    stamp = now;
                    acceptors.reload(&tls, files);
                }
            })
        });
        Ok((acceptors, watcher))
    }

    fn reload(&self, tls: &ServerTls, files: &Files) {
        let fresh = tls
            .reread()
            .and_then(|fresh| fresh.map(|t| t.rustls_config(self.alpn)).transpose());
        match fresh {
            Ok(Some(config)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                match self.current.write() {
                    Ok(mut current) => *current = acceptor,
                    Err(poisoned) => *poisoned.into_inner() = acceptor,
                }
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded: new connections use it");
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(
                cert = %files.cert.display(),
                error = %err,
                "TLS files changed but cannot be used ({err}); still serving the previous certificate"
            ),
        }
    }

    /// The acceptor for a connection accepted now.
    fn current(&self) -> tokio_rustls::TlsAcceptor {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A server's TLS identity that follows its certificate files, for a listener of
/// your own (the gateway's): connections accepted after the files change (checked
/// every [`ServerTls::reload_every`]) get the new certificate, those already open
/// keep theirs; a change that cannot be used is logged and the previous
/// certificate kept. Dropping it stops the watching. rmicro's servers use one
/// each.
pub struct ReloadingAcceptor {
    acceptors: Arc<Acceptors>,
    watch: Option<tokio::task::JoinHandle<()>>,
}

impl ReloadingAcceptor {
    /// Starts serving `tls` (on the current Tokio runtime), offering the `alpn`
    /// protocols (`&[b"h2", b"http/1.1"]`); fails at once when the certificate and
    /// key do not make a server identity.
    pub fn start(tls: &ServerTls, alpn: &'static [&'static [u8]]) -> Result<Self, TlsError> {
        let (acceptors, watch) = Acceptors::start(tls, alpn)?;
        Ok(ReloadingAcceptor { acceptors, watch })
    }

    /// The acceptor for a connection accepted now.
    pub fn current(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptors.current()
    }
}

impl Drop for ReloadingAcceptor {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
    }
}

impl std::fmt::Debug for ReloadingAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingAcceptor")
            .field("alpn", &self.acceptors.alpn)
            .field("watching", &self.watch.is_some())
            .finish()
    }
}

/// Whose settings a handshake-failure sentence points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fixes {
    /// A gRPC client: the `--client-tls-*` flags.
    Grpc,
    /// A link to an outside server: the `tls_*` address options.
    Link,
}

/// What a failed TLS handshake means, in a sentence, from the text of the error a
/// gRPC client saw (rustls names alerts and verification errors by their variants).
pub(crate) fn explain(error: &str) -> Option<&'static str> {
    explain_as(error, Fixes::Grpc)
}

/// [`explain`] with the fix named for `fixes`.
pub(crate) fn explain_as(error: &str, fixes: Fixes) -> Option<&'static str> {
    // (what the error says, the sentence for a gRPC client, for a link)
    const CAUSES: [(&str, &str, &str); 12] = [
        (
            "alert: CertificateRequired",
            "the server requires a client certificate: give one (--client-tls-cert, --client-tls-key)",
            "the server requires a client certificate: give one (tls_cert=FILE&tls_key=FILE in the address)",
        ),
        (
            "alert: UnknownCA",
            "the server does not trust the CA that signed our client certificate",
            "the server does not trust the CA that signed our client certificate (tls_cert)",
        ),
        (
            "alert: CertificateExpired",
            "the server says our client certificate has expired",
            "the server says our client certificate has expired (tls_cert)",
        ),
        (
            "alert: BadCertificate",
            "the server refused our client certificate",
            "the server refused our client certificate, or we gave none (tls_cert, tls_key)",
        ),
        (
            "alert: CertificateUnknown",
            "the server refused our client certificate",
            "the server refused our client certificate (tls_cert)",
        ),
        (
            "alert: HandshakeFailure",
            "the server refused the TLS handshake (a client certificate missing, or no common cipher)",
            "the server refused the TLS handshake: a client certificate missing (tls_cert, tls_key) or no common cipher",
        ),
        (
            "UnknownIssuer",
            "the server's certificate is not signed by a CA this client trusts (--client-tls-ca)",
            "the server's certificate is not signed by a CA this client trusts (tls_ca=FILE in the address)",
        ),
        (
            "certificate expired",
            "the server's certificate has expired",
            "the server's certificate has expired",
        ),
        (
            "Expired",
            "the server's certificate has expired",
            "the server's certificate has expired",
        ),
        (
            "not valid for name",
            "the server's certificate is not for the name dialled (ClientTls::with_domain)",
            "the server's certificate is not for the name dialled (tls_server_name=NAME in the address)",
        ),
        (
            "NotValidForName",
            "the server's certificate is not for the name dialled (ClientTls::with_domain)",
            "the server's certificate is not for the name dialled (tls_server_name=NAME in the address)",
        ),
        (
            "InvalidContentType",
            "the server does not speak TLS here (plain h2c?)",
            "the server does not speak TLS on this port",
        ),
    ];
    CAUSES
        .iter()
        .find(|(needle, _, _)| error.contains(needle))
        .map(|(_, grpc, link)| match fixes {
            Fixes::Grpc => *grpc,
            Fixes::Link => *link,
        })
}

/// How a client verifies the servers it dials over TLS, and the certificate it
/// presents to servers that ask for one (mutual TLS).
#[derive(Clone, Default)]
pub struct ClientTls {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) domain: Option<String>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field("domain", &self.domain)
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Trusts the given CA certificate (PEM) instead of the system roots.
    pub fn with_ca_pem(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// Reads the trusted CA certificate from a PEM file.
    pub fn with_ca_file(self, path: &Path) -> Result<Self, TlsError> {
        Ok(self.with_ca_pem(read(path)?))
    }

    /// The name to verify in the server's certificate, when it differs from the host dialed.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Presents this certificate chain and key (PEM) to servers that verify
    /// client certificates.
    pub fn with_identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Reads the client certificate chain and key from PEM files.
    pub fn with_identity_files(self, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        certificates(&cert_pem, "client certificate")?;
        Ok(self.with_identity_pem(cert_pem, key_pem))
    }

    pub(crate) fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.ca_pem {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        } else {
            config = config.with_webpki_roots();
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_key() {
        let key = "-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n-----END PRIVATE KEY-----\n";
        let server = ServerTls::from_pem("CERT", key).with_client_ca_pem("CA");
        let client = ClientTls::default().with_identity_pem("CERT", key);
        for shown in [format!("{server:?}"), format!("{client:?}")] {
            assert!(!shown.contains("SECRETKEYBYTES"), "{shown}");
        }
        assert!(format!("{client:?}").contains("identity: true"));
    }

    #[test]
    fn handshake_failures_are_explained() {
        assert!(
            explain("received fatal alert: CertificateRequired")
                .is_some_and(|s| s.contains("requires a client certificate"))
        );
        assert!(
            explain("invalid peer certificate: UnknownIssuer")
                .is_some_and(|s| s.contains("not signed by a CA this client trusts"))
        );
        assert!(explain("connection refused").is_none());
    }
}
