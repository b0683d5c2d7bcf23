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
