//! How the NATS broker connects to a server that wants more than a plain TCP
//! connection: private `nats-server`s started by the test with TLS and client
//! certificates from a test CA, with a user and password, with a token, and in
//! operator mode with a credentials file (a user JWT and NKey seed signed as `nsc`
//! signs them). Each refusal says why in a sentence and never shows the secret.

use base64::Engine;
use rmicro::broker::Broker;
use rmicro::broker::testing::{mutual_tls_link, refusal, round_trip};
use rmicro::testing::{TestCa, TestCert, in_ci, link_options};
use rmicro_nats::testing::NatsServer;
use rmicro_nats::{Mode, from_address};

async fn start(
    what: &str,
    config: impl FnOnce(&std::path::Path, u16) -> String,
) -> Option<NatsServer> {
    match NatsServer::with_config(config).await {
        Ok(Some(server)) => Some(server),
        Ok(None) => {
            assert!(!in_ci(), "nats-server is not installed and CI=true");
            eprintln!("SKIPPED {what}: nats-server is not installed");
            None
        }
        Err(err) => panic!("nats-server did not start: {err}"),
    }
}

fn tls_block(ca: &TestCa, cert: &TestCert, verify: bool) -> String {
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  timeout: 5\n}}\n",
        cert.cert_file.display(),
        cert.key_file.display(),
        ca.cert_file().display()
    )
}

async fn refused(address: &str) -> String {
    refusal(&from_address(Some(address), Mode::Core).unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_and_a_password() {
    let ca = TestCa::new("nats-ca");
    let server_cert = ca.server();
    let Some(server) = start("nats mutual tls", |_, _| {
        tls_block(&ca, &server_cert, true)
            + "authorization {\n  user: app\n  password: \"pw-9f3k2\"\n}\n"
    })
    .await
    else {
        return;
    };
    let port = server.port();
    let broker = |userinfo: &str, ca: &std::path::Path, client: Option<&TestCert>| {
        let address = format!(
            "tls://{userinfo}127.0.0.1:{port}?{}",
            link_options(ca, client)
        );
        from_address(Some(&address), Mode::Core).unwrap()
    };
    mutual_tls_link(
        &ca,
        broker,
        "app:pw-9f3k2@",
        "authorization violation",
        "rmicro-tls.mtls",
    )
    .await;

    // Go answers an expired client certificate as any refused one: we name the file.
    let expired = ca.expired_client("app");
    let err = refusal(&broker("app:pw-9f3k2@", &ca.cert_file(), Some(&expired))).await;
    assert!(
        err.contains("the server refused our client certificate"),
        "{err}"
    );
    assert!(err.contains(&*expired.cert_file.to_string_lossy()), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_server_certificate_is_named() {
    let ca = TestCa::new("nats-ca");
    let stale = ca.expired_server();
    let Some(server) = start("nats expired certificate", |_, _| {
        tls_block(&ca, &stale, false)
    })
    .await
    else {
        return;
    };
    let err = refused(&format!(
        "tls://127.0.0.1:{}?{}",
        server.port(),
        link_options(&ca.cert_file(), None)
    ))
    .await;
    assert!(err.contains("server's certificate has expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token() {
    let Some(server) = start("nats token", |_, _| {
        "authorization {\n  token: \"tok-5c1d\"\n}\n".to_owned()
    })
    .await
    else {
        return;
    };
    let port = server.port();
    let broker = from_address(
        Some(&format!("nats://tok-5c1d@127.0.0.1:{port}")),
        Mode::Core,
    )
    .unwrap();
    assert!(
        !broker.describe().contains("tok-5c1d"),
        "{}",
        broker.describe()
    );
    round_trip(&broker, "rmicro-tls.token").await.unwrap();
    let err = refused(&format!("nats://tok-bad9@127.0.0.1:{port}")).await;
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    assert!(!err.contains("tok-bad9"), "the token shown: {err}");
}

/// A NATS JWT (`ed25519-nkey`) for `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{}", std::process::id()),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = b64(claims.to_string().as_bytes());
    let signature = issuer
        .sign(format!("{header}.{claims}").as_bytes())
        .unwrap();
    format!("{header}.{claims}.{}", b64(&signature))
}

/// A credentials file for a new user of `account`, as `nsc` writes one.
fn credentials(dir: &std::path::Path, name: &str, account: &nkeys::KeyPair) -> std::path::PathBuf {
    let user = nkeys::KeyPair::new_user();
    let token = jwt(
        account,
        &user.public_key(),
        name,
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}),
    );
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credentials_file_in_operator_mode() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let stranger = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "rmicro-op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "rmicro-app",
        serde_json::json!({
            "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                       "wildcards": true, "conn": -1, "leaf": -1},
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account", "version": 2
        }),
    );
    let Some(server) = start("nats credentials file", |dir, _| {
        let op = dir.join("operator.jwt");
        std::fs::write(&op, &operator_jwt).unwrap();
        format!(
            "operator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account_jwt}\"\n}}\n",
            op.display(),
            account.public_key()
        )
    })
    .await
    else {
        return;
    };
    let port = server.port();
    let dir = server.dir();
    let good = credentials(dir, "app", &account);
    let broker = from_address(
        Some(&format!("nats://127.0.0.1:{port}?creds={}", good.display())),
        Mode::Core,
    )
    .unwrap();
    round_trip(&broker, "rmicro-tls.creds").await.unwrap();

    // A user of an account the operator never signed.
    let bad = credentials(dir, "intruder", &stranger);
    let err = refused(&format!("nats://127.0.0.1:{port}?creds={}", bad.display())).await;
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    // No credentials at all.
    let err = refused(&format!("nats://127.0.0.1:{port}")).await;
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    // A missing file is named.
    let err = refused(&format!(
        "nats://127.0.0.1:{port}?creds=/nonexistent/x.creds"
    ))
    .await;
    assert!(err.contains("/nonexistent/x.creds"), "{err}");
}
