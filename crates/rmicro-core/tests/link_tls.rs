//! `LinkTls`, the TLS of links to outside servers, against a real TLS server (rustls,
//! verifying client certificates) on a loopback port: the client certificate the
//! server sees follows the files when they are rewritten, a broken rewrite is
//! refused while the previous identity stays in use, and each handshake failure is
//! explained in a sentence.

extern crate rmicro_core as rmicro;

use rmicro::testing::{TestCa, TestCert};
use rmicro::transport::{LinkTls, ServerTls, error_chain, explain_link_failure};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS server that requires a client certificate from `ca` and answers each
/// connection with the common name of the certificate the client presented.
async fn echo_peer_name(server: &TestCert, ca: &TestCa) -> std::net::SocketAddr {
    let config = ServerTls::from_pem(server.cert_pem.clone(), server.key_pem.clone())
        .with_client_ca_pem(ca.cert_pem.clone())
        .rustls_config(&[])
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let name = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|der| common_name(der.as_ref()))
                    .unwrap_or_default();
                let _ = tls.write_all(name.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

/// The subject CN of a DER certificate: the last CN (the issuer's comes first).
fn common_name(der: &[u8]) -> String {
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    let Some(at) = der.windows(oid.len()).rposition(|w| w == oid) else {
        return String::new();
    };
    let value = &der[at + oid.len()..];
    let len = usize::from(value[1]);
    String::from_utf8_lossy(&value[2..2 + len]).into_owned()
}

/// Connects with `tls` and returns what the server wrote, or the error's text.
async fn dial(tls: &LinkTls, address: std::net::SocketAddr) -> Result<String, String> {
    let config = tls.client_config(&[]).map_err(|e| e.to_string())?;
    read_from(Arc::new(config), address).await
}

/// Connects with `config` to the server at `address` (as `localhost`) and returns
/// what it wrote, or the error's text.
async fn read_from(
    config: Arc<rustls::ClientConfig>,
    address: std::net::SocketAddr,
) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| error_chain(&e))?;
    let mut out = String::new();
    stream
        .read_to_string(&mut out)
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(out)
}

fn copy(from: &TestCert, to_cert: &std::path::Path, to_key: &std::path::Path) {
    std::fs::write(to_cert, &from.cert_pem).unwrap();
    std::fs::write(to_key, &from.key_pem).unwrap();
}

#[tokio::test]
async fn a_rotated_client_certificate_is_used_by_the_next_connection() {
    let ca = TestCa::new("link-ca");
    let address = echo_peer_name(&ca.server(), &ca).await;
    let dir = tempdir();
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    copy(&ca.client("first", &[]), &cert, &key);
    let tls = LinkTls::new()
        .with_ca_file(ca.cert_file())
        .with_identity_files(&cert, &key);
    // One configuration, made once, as a client library keeps it for reconnections.
    let config = Arc::new(tls.client_config(&[]).unwrap());
    let once = |config: Arc<rustls::ClientConfig>| read_from(config, address);
    assert_eq!(once(config.clone()).await.unwrap(), "first");

    copy(&ca.client("second", &[]), &cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = once(config.clone()).await.unwrap();
        if seen == "second" {
            break;
        }
        assert_eq!(seen, "first", "only the old or the new identity");
        assert!(
            Instant::now() < deadline,
            "the new certificate was never used"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken rewrite is refused: the last good identity stays in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(once(config.clone()).await.unwrap(), "second");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rmicro-link-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn each_handshake_failure_is_named() {
    let ca = TestCa::new("link-ca");
    let other = TestCa::new("other-ca");
    let client = ca.client("app", &[]);
    let good = LinkTls::new()
        .with_ca_file(ca.cert_file())
        .with_identity_files(&client.cert_file, &client.key_file);
    let address = echo_peer_name(&ca.server(), &ca).await;
    assert_eq!(dial(&good, address).await.unwrap(), "app");

    // The server's certificate is signed by a CA we do not trust.
    let wrong_ca = good.clone().with_ca_file(other.cert_file());
    let err = dial(&wrong_ca, address).await.unwrap_err();
    let sentence = explain_link_failure(&err).unwrap_or_else(|| panic!("unexplained: {err}"));
    assert!(
        sentence.contains("not signed by a CA this client trusts"),
        "{sentence}"
    );

    // The server's certificate has expired.
    let expired = echo_peer_name(&ca.expired_server(), &ca).await;
    let err = dial(&good, expired).await.unwrap_err();
    let sentence = explain_link_failure(&err).unwrap_or_else(|| panic!("unexplained: {err}"));
    assert!(
        sentence.contains("server's certificate has expired"),
        "{sentence}"
    );

    // No client certificate where the server requires one.
    let anonymous = LinkTls::new().with_ca_file(ca.cert_file());
    let err = dial(&anonymous, address).await.unwrap_err();
    let sentence = explain_link_failure(&err).unwrap_or_else(|| panic!("unexplained: {err}"));
    assert!(
        sentence.contains("requires a client certificate"),
        "{sentence}"
    );

    // Our client certificate has expired.
    let old = ca.expired_client("app");
    let stale = LinkTls::new()
        .with_ca_file(ca.cert_file())
        .with_identity_files(&old.cert_file, &old.key_file);
    let err = dial(&stale, address).await.unwrap_err();
    let sentence = explain_link_failure(&err).unwrap_or_else(|| panic!("unexplained: {err}"));
    assert!(
        sentence.contains("our client certificate has expired"),
        "{sentence}"
    );

    // A missing file is named before any connection.
    let missing = LinkTls::new().with_ca_file("/nonexistent/ca.pem");
    let err = missing.client_config(&[]).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");

    // A name override verifies that name instead of the host dialled.
    let renamed = good.clone().with_server_name("elsewhere.example");
    let err = dial(&renamed, address).await.unwrap_err();
    let sentence = explain_link_failure(&err).unwrap_or_else(|| panic!("unexplained: {err}"));
    assert!(sentence.contains("tls_server_name"), "{sentence}");
}
