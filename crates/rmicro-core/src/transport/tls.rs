//! TLS settings for servers and clients (rustls with the `ring` provider).

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        /// `certificate` or `private key`.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS certificate and key do not form a valid server identity: {0}")]
    Config(#[from] rustls::Error),
}

/// A server's certificate chain and private key, PEM-encoded.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl ServerTls {
    /// Uses PEM bytes already in memory.
    pub fn from_pem(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        ServerTls {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// Reads the certificate chain and key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self::from_pem(read(cert)?, read(key)?))
    }

    /// Builds the rustls acceptor, advertising HTTP/2 by ALPN.
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        Ok(tokio_rustls::TlsAcceptor::from(
            self.rustls_config(&[b"h2"])?,
        ))
    }

    /// The rustls server configuration of this identity (ring provider, safe
    /// protocol versions, no client certificate asked), advertising `alpn` in
    /// order of preference — `[b"h2", b"http/1.1"]` for an HTTP server that speaks
    /// both, as the API gateway does.
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = rustls_pemfile::certs(&mut self.cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "certificate",
                detail: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                detail: "no CERTIFICATE block found".into(),
            });
        }
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
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// How a client verifies the servers it dials over TLS.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) domain: Option<String>,
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
        config
    }
}
