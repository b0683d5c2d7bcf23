//! One HTTP(S) GET, for documents a service reads now and then (a JWKS key set):
//! a connection per fetch, TLS by rustls for `https` (the web's roots, or a CA of
//! the caller's), a bounded body and a bounded time, a sentence when it fails.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// Fetches `url` (`http://` or `https://`) within `within`, refusing a body larger
/// than `limit` bytes; `ca_pem` replaces the web's roots for `https`.
pub(crate) async fn get(
    url: &str,
    ca_pem: Option<&[u8]>,
    limit: usize,
    within: Duration,
) -> Result<Bytes, String> {
    tokio::time::timeout(within, get_now(url, ca_pem, limit))
        .await
        .map_err(|_| format!("GET {url}: no answer within {within:?}"))?
}

async fn get_now(url: &str, ca_pem: Option<&[u8]>, limit: usize) -> Result<Bytes, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("`{url}` names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("GET {url}: cannot connect: {e}"))?;
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or("", |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let response = if tls {
        let config = client_config(ca_pem)?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("GET {url}: `{host}` is not a TLS server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("GET {url}: TLS handshake failed: {e}"))?;
        send(TokioIo::new(stream), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
    .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("GET {url}: the body could not be read (at most {limit} bytes): {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("GET {url}: answered {status}"));
    }
    Ok(body)
}

async fn send<IO>(
    io: IO,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await
}

fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| format!("the CA is not valid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA certificate cannot be used: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
