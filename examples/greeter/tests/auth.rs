//! `wrapper::auth` on a real server over a real connection: every rule kind,
//! tokens that must be refused (expired, not yet valid, forged, `alg: none`,
//! wrong audience or issuer, another algorithm), UNAUTHENTICATED vs
//! PERMISSION_DENIED with messages that never echo the token, the principal in
//! the handler's context, the client's bearer token, and a key rotation without
//! a restart.

mod common;

use common::start_with;
use greeter::proto::{GreeterClient, HelloReply, HelloRequest};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rmicro::wrapper::auth::{AuthLayer, BearerToken, Principal};
use rmicro::{Error, Request};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A greeter that says who called.
struct WhoAmI;

impl greeter::proto::Greeter for WhoAmI {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<HelloReply, Error> {
        let who = request.context().get::<Principal>().map_or_else(
            || "anonymous".to_owned(),
            |p| format!("{} {:?}", p.subject, p.scopes),
        );
        Ok(HelloReply {
            message: format!("Hello {} from {who}", request.message().name),
        })
    }
    async fn say_hello_stream(
        &self,
        _: Request<HelloRequest>,
        _: rmicro::ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Ok(())
    }
    async fn collect(
        &self,
        _: Request<rmicro::RequestStream<HelloRequest>>,
    ) -> Result<HelloReply, Error> {
        Ok(HelloReply::default())
    }
    async fn chat(
        &self,
        _: Request<rmicro::RequestStream<HelloRequest>>,
        _: rmicro::ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Ok(())
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hs256(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("a token")
}

fn claims(sub: &str, scope: &str) -> serde_json::Value {
    json!({"sub": sub, "scope": scope, "exp": now() + 600, "iss": "https://auth.test", "aud": "greeter"})
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count: 0,
    }
}

/// A call with `token` (none when empty): the reply or the error.
async fn call(client: &GreeterClient, token: &str) -> Result<String, Error> {
    let mut call = client.say_hello(hello("x"));
    if !token.is_empty() {
        call = call.metadata("authorization", &format!("Bearer {token}"));
    }
    call.await.map(|r| r.message)
}

fn assert_refused(result: Result<String, Error>, code: u16, why: &str, token: &str) {
    let err = result.expect_err(why);
    assert_eq!(err.code, code, "{err}");
    assert!(err.detail.contains(why), "`{why}` in {err}");
    if token.len() > 10 {
        assert!(!err.detail.contains(token), "the token is echoed: {err}");
    }
}

#[tokio::test]
async fn tokens_are_verified_and_rules_decide() {
    let auth = AuthLayer::hs256(SECRET)
        .issuer("https://auth.test")
        .audience("greeter")
        .rule(
            "greeter.Greeter.SayHelloStream",
            rmicro::wrapper::auth::Access::Public,
        )
        .require("greeter.Greeter.SayHello", &["greet", "admin"])
        .authenticated("greeter.Greeter.Collect");
    let (_service, server) = start_with(WhoAmI, |b| b.wrap_handler(auth)).await;
    let client = common::client_for(&server);

    let good = hs256(claims("ann", "read greet"));
    assert_eq!(
        call(&client, &good).await.expect("allowed"),
        r#"Hello x from ann ["read", "greet"]"#
    );
    // Roles count as scopes too.
    let admin = hs256(
        json!({"sub": "root", "roles": ["admin"], "exp": now() + 60, "iss": "https://auth.test", "aud": "greeter"}),
    );
    assert!(
        call(&client, &admin)
            .await
            .expect("allowed")
            .ends_with(r#"root ["admin"]"#)
    );

    assert_refused(call(&client, "").await, 401, "no bearer token", "");
    let reader = hs256(claims("bob", "read"));
    assert_refused(
        call(&client, &reader).await,
        403,
        "needs scope greet or admin; the token grants read",
        &reader,
    );
    let expired = hs256(
        json!({"sub": "ann", "scope": "greet", "exp": now() - 3600, "iss": "https://auth.test", "aud": "greeter"}),
    );
    assert_refused(
        call(&client, &expired).await,
        401,
        "the token has expired",
        &expired,
    );
    let early = hs256(
        json!({"sub": "ann", "scope": "greet", "nbf": now() + 3600, "exp": now() + 7200, "iss": "https://auth.test", "aud": "greeter"}),
    );
    assert_refused(call(&client, &early).await, 401, "not valid yet", &early);
    let elsewhere = hs256(
        json!({"sub": "ann", "scope": "greet", "exp": now() + 60, "iss": "https://auth.test", "aud": "billing"}),
    );
    assert_refused(call(&client, &elsewhere).await, 401, "audience", &elsewhere);
    let stranger = hs256(
        json!({"sub": "ann", "scope": "greet", "exp": now() + 60, "iss": "https://evil.test", "aud": "greeter"}),
    );
    assert_refused(call(&client, &stranger).await, 401, "issuer", &stranger);
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("ann", "greet"),
        &EncodingKey::from_secret(b"not the secret, not the secret!!"),
    )
    .expect("a token");
    assert_refused(
        call(&client, &forged).await,
        401,
        "signature does not verify",
        &forged,
    );
    // `alg: none`: a header and claims with no signature at all.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims("ann", "greet admin").to_string())
    );
    assert_refused(call(&client, &none).await, 401, "the token", &none);
    assert_refused(call(&client, "garbage").await, 401, "malformed", "");

    // Public: no token needed. Authenticated: any valid token, no scope needed.
    let mut stream = client.say_hello_stream(hello("x")).await.expect("public");
    assert!(stream.message().await.expect("ends well").is_none());
    let collect = client
        .collect(futures_util::stream::empty())
        .metadata("authorization", &format!("Bearer {reader}"))
        .await;
    assert!(collect.is_ok(), "{collect:?}");
    // Deny by default: a resource no rule names.
    let chat = client
        .chat(futures_util::stream::empty())
        .metadata("authorization", &format!("Bearer {good}"))
        .await;
    let err = chat.expect_err("no rule allows Chat");
    assert_eq!(err.code, 403, "{err}");
    assert!(err.detail.contains("no rule allows it"), "{err}");
}

#[tokio::test]
async fn asymmetric_keys_verify_and_rotate_without_a_restart() {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    let es256 = AuthLayer::es256_pem(ec.public_key_pem().as_bytes()).expect("ES256 key");
    let eddsa = AuthLayer::eddsa_pem(ed.public_key_pem().as_bytes()).expect("EdDSA key");
    let rsa = rsa_key_pair();
    let rs256 = AuthLayer::rs256_pem(rsa.1.as_bytes()).expect("RS256 key");
    let auth = es256.clone();
    let (_service, server) = start_with(WhoAmI, |b| b.wrap_handler(auth)).await;
    let client = common::client_for(&server);
    let body = json!({"sub": "ann", "exp": now() + 60});
    let sign = |alg, key: &EncodingKey| {
        jsonwebtoken::encode(&Header::new(alg), &body, key).expect("a token")
    };
    let by_ec = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("key"),
    );
    let by_ed = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).expect("key"),
    );
    let by_rsa = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(rsa.0.as_bytes()).expect("key"),
    );
    assert!(call(&client, &by_ec).await.is_ok());
    assert_refused(
        call(&client, &by_ed).await,
        401,
        "EdDSA, which no trusted key verifies",
        &by_ed,
    );
    // A rotation: from now on EdDSA and RS256 are trusted, ES256 no longer.
    es256.rotate(&eddsa.trust(&rs256));
    assert!(
        call(&client, &by_ed).await.is_ok(),
        "the new key is trusted at once"
    );
    assert!(call(&client, &by_rsa).await.is_ok());
    assert_refused(call(&client, &by_ec).await, 401, "ES256", &by_ec);
}

#[tokio::test]
async fn the_client_attaches_its_bearer_token() {
    let (_service, server) = start_with(WhoAmI, |b| b.wrap_handler(AuthLayer::hs256(SECRET))).await;
    let token = hs256(json!({"sub": "svc-a", "exp": now() + 60}));
    let options = rmicro::client::ClientOptions::default().wrap_client(BearerToken::fixed(token));
    let client =
        rmicro::Client::new(options).with_route("greeter", server.local_addr().to_string());
    let reply = GreeterClient::new("greeter", client)
        .say_hello(hello("y"))
        .await
        .expect("the client's token is accepted");
    assert_eq!(reply.message, "Hello y from svc-a []");
    // Health stays public for probes, asked by tonic's own health client.
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = common::tonic_channel_at(server.local_addr()).await;
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await;
    assert!(health.is_ok(), "{health:?}");
    // Anything else without a token is refused.
    let anonymous =
        rmicro::Client::default().with_route("greeter", server.local_addr().to_string());
    let err = GreeterClient::new("greeter", anonymous)
        .say_hello(hello("z"))
        .await
        .expect_err("no token");
    assert_eq!(err.code, 401, "{err}");
}

/// An RSA key pair (private PKCS#8 PEM, public PEM) made by `openssl`.
fn rsa_key_pair() -> (String, String) {
    let dir = std::env::temp_dir().join(format!("rmicro-auth-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let private = dir.join("key.pem");
    let public = dir.join("pub.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .status()
        .expect("openssl runs")
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .expect("openssl runs")
            .success();
    assert!(ok, "openssl made an RSA key");
    let pair = (
        std::fs::read_to_string(&private).expect("private key"),
        std::fs::read_to_string(&public).expect("public key"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

/// A P-256 signing key with its `kid`: the JWK of its public half, and tokens.
struct SigningKey {
    kid: &'static str,
    encoding: EncodingKey,
}

impl SigningKey {
    fn new(kid: &'static str) -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        SigningKey {
            kid,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("key"),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding, Algorithm::ES256)
            .expect("a JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        serde_json::to_value(jwk).expect("JSON")
    }

    fn token(&self, sub: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": sub, "exp": now() + 600}),
            &self.encoding,
        )
        .expect("a token")
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Serves the current `document` at any path over HTTPS (a certificate of `ca`),
/// counting the fetches.
async fn jwks_server(
    ca: &rmicro::testing::TestCa,
    document: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cert = ca.server();
    let config = rmicro::transport::ServerTls::from_pem(cert.cert_pem, cert.key_pem)
        .rustls_config(&[b"http/1.1"])
        .expect("a TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, document, fetches) =
                (acceptor.clone(), document.clone(), fetches.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = document.lock().expect("not poisoned").clone();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

#[tokio::test]
async fn keys_come_from_a_jwks_url_and_rotate_when_it_changes() {
    use rmicro::wrapper::auth::Jwks;
    use std::sync::atomic::Ordering;
    let (old, new) = (SigningKey::new("2026-11"), SigningKey::new("2026-12"));
    let ca = rmicro::testing::TestCa::new("JWKS CA");
    let document = std::sync::Arc::new(std::sync::Mutex::new(jwks(&[&old])));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let address = jwks_server(&ca, document.clone(), fetches.clone()).await;
    let source = Jwks::url(format!(
        "https://localhost:{}/.well-known/jwks.json",
        address.port()
    ))
    .trusting(ca.cert_pem.as_bytes().to_vec());
    let auth = AuthLayer::jwks(&source.read().await.expect("the JWKS is served"))
        .expect("usable keys")
        .authenticated("greeter.*");
    let refresh = auth.refresh(source, std::time::Duration::from_millis(200));
    let (_service, server) = start_with(WhoAmI, |b| b.wrap_handler(auth)).await;
    let client = common::client_for(&server);
    assert_eq!(
        call(&client, &old.token("ann")).await.expect("old key"),
        "Hello x from ann []"
    );
    let by_new = new.token("bo");
    assert_refused(
        call(&client, &by_new).await,
        401,
        "no trusted key verifies",
        &by_new,
    );

    // The identity provider rolls its key: the service follows without a restart.
    *document.lock().expect("not poisoned") = jwks(&[&new]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(&client, &by_new).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never trusted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let by_old = old.token("ann");
    assert_refused(
        call(&client, &by_old).await,
        401,
        "no trusted key verifies",
        &by_old,
    );

    // A broken document is not taken: the keys stay as they were.
    *document.lock().expect("not poisoned") = "{\"keys\": 42}".into();
    let seen = fetches.load(Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fetches.load(Ordering::SeqCst) < seen + 2 {
        assert!(std::time::Instant::now() < deadline, "no refresh happened");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        call(&client, &by_new).await.is_ok(),
        "a broken JWKS replaced the keys"
    );
    refresh.abort();

    // Refused with a sentence: not a key set, no usable key, an untrusted server.
    let err = AuthLayer::jwks(b"{\"keys\": 42}").expect_err("not a JWKS");
    assert!(err.to_string().contains("not a JWKS key set"), "{err}");
    let err = AuthLayer::jwks(
        br#"{"keys": [{"kty": "EC", "crv": "P-384", "x": "", "y": "", "use": "enc"}]}"#,
    )
    .expect_err("no usable key");
    assert!(
        err.to_string()
            .contains("none of its 1 key(s) can verify tokens"),
        "{err}"
    );
    let err = Jwks::url(format!("https://localhost:{}/jwks", address.port()))
        .read()
        .await
        .expect_err("the test CA is not among the web's roots");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
}

#[tokio::test]
async fn keys_come_from_a_jwks_file() {
    use rmicro::wrapper::auth::Jwks;
    let (old, new) = (SigningKey::new("a"), SigningKey::new("b"));
    let path = std::env::temp_dir().join(format!("rmicro-jwks-{}.json", std::process::id()));
    std::fs::write(&path, jwks(&[&old])).expect("writes");
    let source = Jwks::file(&path);
    let auth = AuthLayer::jwks(&source.read().await.expect("reads")).expect("usable keys");
    let refresh = auth.refresh(source, std::time::Duration::from_millis(100));
    let (_service, server) = start_with(WhoAmI, |b| b.wrap_handler(auth)).await;
    let client = common::client_for(&server);
    assert!(call(&client, &old.token("a")).await.is_ok());
    // Both keys during a rollover, then only the new one.
    std::fs::write(&path, jwks(&[&old, &new])).expect("writes");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(&client, &new.token("b")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never trusted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        call(&client, &old.token("a")).await.is_ok(),
        "both keys during the rollover"
    );
    refresh.abort();
    let _ = std::fs::remove_file(&path);
    let err = Jwks::file("/nonexistent/jwks.json")
        .read()
        .await
        .expect_err("no file");
    assert!(
        err.to_string()
            .contains("cannot read `/nonexistent/jwks.json`"),
        "{err}"
    );
}

/// The `--auth-*` flags on a service: its calls need a token signed by the key in
/// the file, rules decide per endpoint, health stays public; a key file that
/// cannot be read stops the start with a sentence naming it.
#[tokio::test]
async fn a_service_verifies_tokens_by_its_flags() {
    let dir = std::env::temp_dir().join(format!("rmicro-auth-flags-{}", common::uuid_like()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let secret = dir.join("hs256.key");
    // `echo secret > file` leaves a newline: not part of the secret.
    std::fs::write(&secret, [SECRET, b"\n"].concat()).expect("the secret written");
    let secret = secret.to_string_lossy().into_owned();
    let flags = |secret: &str| {
        let secret = secret.to_owned();
        move |b: rmicro::ServiceBuilder| {
            b.args([
                "greeter",
                "--log-level",
                "warn",
                "--auth-hs256-secret-file",
                &secret,
                "--auth-audience",
                "greeter",
                "--auth-rule",
                "greeter.Greeter.SayHello=greet",
            ])
        }
    };
    let (_service, server) = start_with(WhoAmI, flags(&secret)).await;
    let client = common::client_for(&server);
    let good = hs256(claims("ann", "greet"));
    assert_eq!(
        call(&client, &good).await.expect("allowed"),
        r#"Hello x from ann ["greet"]"#
    );
    assert_refused(call(&client, "").await, 401, "no bearer token", "");
    let reader = hs256(claims("bob", "read"));
    assert_refused(
        call(&client, &reader).await,
        403,
        "needs scope greet; the token grants read",
        &reader,
    );
    let other = json!({"sub": "eve", "scope": "greet", "exp": now() + 600, "aud": "other"});
    assert_refused(call(&client, &hs256(other)).await, 401, "audience", "");
    // Probes need no token.
    let health = rmicro::Client::default()
        .check_health(
            &server.local_addr().to_string(),
            "",
            rmicro::CallOptions::new(),
        )
        .await;
    assert_eq!(
        health.status,
        rmicro::client::HealthStatus::Serving,
        "{health:?}"
    );

    let missing = dir.join("missing.key").to_string_lossy().into_owned();
    let service = flags(&missing)(
        rmicro::Service::builder("greeter")
            .address("127.0.0.1:0")
            .handle(greeter::proto::GreeterServer::new(WhoAmI)),
    )
    .build()
    .expect("the flags parse");
    let err = service
        .start()
        .await
        .expect_err("no key, no start")
        .to_string();
    assert!(
        err.contains("missing.key") && err.contains("cannot read"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
