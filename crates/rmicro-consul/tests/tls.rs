//! The Consul registry over HTTPS with an ACL token, against the Consul double
//! (no Consul can run on these machines; see `rmicro_consul::testing`) serving
//! HTTPS that requires client certificates from a test CA, with ACLs on and
//! `default_policy = "deny"`: a service registers and is found; a missing or wrong
//! token is refused with Consul's own answer and the token is never shown; a wrong
//! CA, a missing client certificate and an expired server certificate each fail
//! with a sentence naming the cause.

use rmicro::registry::{Registry, testing};
use rmicro::testing::{TestCa, TestCert, link_options};
use rmicro::transport::ServerTls;
use rmicro_consul::testing::{ConsulDouble, DoubleOptions};
use rmicro_consul::{ConsulClient, ConsulRegistry};
use std::time::Duration;

const TOKEN: &str = "6f1c5e0a-acl-token-77";

async fn double(ca: &TestCa, cert: &TestCert) -> ConsulDouble {
    let tls = ServerTls::from_pem(cert.cert_pem.clone(), cert.key_pem.clone())
        .with_client_ca_pem(ca.cert_pem.clone());
    ConsulDouble::start_with(DoubleOptions {
        tls: Some(tls),
        acl_token: Some(TOKEN.to_owned()),
    })
    .await
    .unwrap()
}

fn token_file(dir: &std::path::Path, token: &str) -> std::path::PathBuf {
    let path = dir.join(format!("token-{}", token.len()));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

async fn refusal(address: &str) -> String {
    let client = ConsulClient::new(address)
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    match client.get("/v1/catalog/services", None).await {
        Ok(_) => panic!("{address} should have been refused"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn a_registry_over_https_with_an_acl_token() {
    let ca = TestCa::new("consul-ca");
    let client = ca.client("app", &[]);
    let agent = double(&ca, &ca.server()).await;
    let dir = std::env::temp_dir().join(format!("rmicro-consul-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good_token = token_file(&dir, TOKEN);
    let tls = link_options(&ca.cert_file(), Some(&client));
    let base = format!("https://{}", agent.address());

    let registry =
        ConsulRegistry::new(&format!("{base}?{tls}&token_file={}", good_token.display())).unwrap();
    let record = testing::record("tls-greeter", "1.0.0", "tls-1", "127.0.0.1:9");
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .unwrap();
    let found = registry.get_service("tls-greeter").await.unwrap();
    assert_eq!(found[0].nodes[0].id, "tls-1");

    // No token: the anonymous token may do nothing.
    let err = refusal(&format!("{base}?{tls}")).await;
    assert!(
        err.contains("403") && err.contains("Permission denied"),
        "{err}"
    );
    // A wrong token: refused, and not shown.
    let wrong = token_file(&dir, "wrong-token-5521");
    let err = refusal(&format!("{base}?{tls}&token_file={}", wrong.display())).await;
    assert!(
        err.contains("403") && err.contains("ACL not found"),
        "{err}"
    );
    assert!(!err.contains("wrong-token-5521"), "the token shown: {err}");
    // A token file that is not there is named when the client is made.
    let err = ConsulClient::new(&format!("{base}?token_file=/nonexistent/token"))
        .expect_err("a missing token file")
        .to_string();
    assert!(err.contains("/nonexistent/token"), "{err}");

    let other = TestCa::new("other-ca");
    let err = refusal(&format!(
        "{base}?{}&token_file={}",
        link_options(&other.cert_file(), Some(&client)),
        good_token.display()
    ))
    .await;
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );

    let err = refusal(&format!(
        "{base}?{}&token_file={}",
        link_options(&ca.cert_file(), None),
        good_token.display()
    ))
    .await;
    assert!(
        err.contains("the server requires a client certificate"),
        "{err}"
    );

    // Plain HTTP to the HTTPS agent fails and says where.
    let err = refusal(&agent.address()).await;
    assert!(err.contains(&agent.address()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_expired_server_certificate_is_named() {
    let ca = TestCa::new("consul-ca");
    let client = ca.client("app", &[]);
    let agent = double(&ca, &ca.expired_server()).await;
    let err = refusal(&format!(
        "https://{}?{}",
        agent.address(),
        link_options(&ca.cert_file(), Some(&client))
    ))
    .await;
    assert!(err.contains("server's certificate has expired"), "{err}");
}
