//! Mutual TLS: the server verifies client certificates against a CA
//! (`--tls-client-ca-file`, required or optional), the handler sees who called,
//! a wrong CA, an expired certificate and a missing one each fail with a sentence
//! naming the cause, and certificates are reloaded from their files while calls
//! in flight go on.

mod common;

use common::start_with;
use greeter::proto::{GreeterClient, HelloReply, HelloRequest};
use rmicro::testing::{TestCa, TestCert};
use rmicro::transport::{ClientAuth, ClientTls, ServerTls};
use rmicro::wrapper::auth::{AuthLayer, BearerToken, Principal};
use rmicro::{Error, Request};
use std::time::{Duration, Instant};

/// Answers with the caller's certificate identity.
struct PeerEcho;

impl greeter::proto::Greeter for PeerEcho {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<HelloReply, Error> {
        let mut who = match request.context().peer().and_then(|p| p.identity()) {
            Some(id) => format!("{} {:?}", id.subject, id.sans),
            None => "nobody".to_owned(),
        };
        if let Some(principal) = request.context().get::<Principal>() {
            who.push_str(&format!(" as {} {:?}", principal.subject, principal.scopes));
        }
        Ok(HelloReply {
            message: format!("Hello {} from {who}", request.message().name),
        })
    }
    async fn say_hello_stream(
        &self,
        request: Request<HelloRequest>,
        replies: rmicro::ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        greeter::proto::Greeter::say_hello_stream(&greeter::Greeter, request, replies).await
    }
    async fn collect(
        &self,
        request: Request<rmicro::RequestStream<HelloRequest>>,
    ) -> Result<HelloReply, Error> {
        greeter::proto::Greeter::collect(&greeter::Greeter, request).await
    }
    async fn chat(
        &self,
        request: Request<rmicro::RequestStream<HelloRequest>>,
        replies: rmicro::ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        greeter::proto::Greeter::chat(&greeter::Greeter, request, replies).await
    }
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count: 0,
    }
}

/// A client trusting `ca_pem` for the server, presenting `identity` if given, on
/// a connection of its own.
fn client(
    server: &rmicro::server::RunningServer,
    ca_pem: &str,
    identity: Option<&TestCert>,
) -> GreeterClient {
    let mut tls = ClientTls::default()
        .with_ca_pem(ca_pem.as_bytes().to_vec())
        .with_domain("localhost");
    if let Some(id) = identity {
        tls = tls.with_identity_pem(
            id.cert_pem.as_bytes().to_vec(),
            id.key_pem.as_bytes().to_vec(),
        );
    }
    let client = rmicro::Client::new(rmicro::client::ClientOptions {
        retries: 0,
        ..Default::default()
    })
    .with_tls(tls)
    .with_route("greeter", server.local_addr().to_string());
    GreeterClient::new("greeter", client)
}

async fn refused(client: &GreeterClient) -> String {
    let err = client
        .say_hello(hello("x"))
        .await
        .expect_err("the handshake must fail");
    err.to_string()
}

#[tokio::test]
async fn mutual_tls_verifies_clients_and_the_handler_sees_who_called() {
    let ca = TestCa::new("rmicro test CA");
    let server_cert = ca.server();
    let (_service, server) = start_with(PeerEcho, |b| {
        b.tls(
            ServerTls::from_pem(server_cert.cert_pem.clone(), server_cert.key_pem.clone())
                .with_client_ca_pem(ca.cert_pem.clone()),
        )
    })
    .await;
    let billing = ca.client("billing", &["spiffe://acme/billing", "billing.acme"]);
    let reply = client(&server, &ca.cert_pem, Some(&billing))
        .say_hello(hello("ann"))
        .await
        .expect("a client with a certificate of the CA is served");
    assert_eq!(
        reply.message,
        r#"Hello ann from CN=billing ["spiffe://acme/billing", "billing.acme"]"#
    );

    // No certificate at all.
    let err = refused(&client(&server, &ca.cert_pem, None)).await;
    println!("no client certificate: {err}");
    assert!(
        err.contains("the server requires a client certificate"),
        "{err}"
    );
    // A certificate from another CA.
    let other = TestCa::new("another CA");
    let stranger = other.client("mallory", &[]);
    let err = refused(&client(&server, &ca.cert_pem, Some(&stranger))).await;
    println!("a client certificate of another CA: {err}");
    assert!(
        err.contains("does not trust the CA that signed our client certificate"),
        "{err}"
    );
    // An expired certificate of the right CA.
    let expired = ca.expired_client("old");
    let err = refused(&client(&server, &ca.cert_pem, Some(&expired))).await;
    println!("an expired client certificate: {err}");
    assert!(err.contains("our client certificate has expired"), "{err}");
    // The client not trusting the server's CA names that.
    let err = refused(&client(&server, &other.cert_pem, Some(&billing))).await;
    println!("the server's certificate from a CA the client does not trust: {err}");
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );
}

#[tokio::test]
async fn an_optional_client_certificate_lets_anonymous_clients_in() {
    let ca = TestCa::new("rmicro test CA");
    let server_cert = ca.server();
    let (_service, server) = start_with(PeerEcho, |b| {
        b.tls(
            ServerTls::from_pem(server_cert.cert_pem.clone(), server_cert.key_pem.clone())
                .with_client_ca_pem(ca.cert_pem.clone())
                .client_auth(ClientAuth::Optional),
        )
    })
    .await;
    let reply = client(&server, &ca.cert_pem, None)
        .say_hello(hello("anon"))
        .await
        .expect("no certificate is fine when optional");
    assert_eq!(reply.message, "Hello anon from nobody");
    let reply = client(&server, &ca.cert_pem, Some(&ca.client("ops", &[])))
        .say_hello(hello("ops"))
        .await
        .expect("a good certificate is read");
    assert_eq!(reply.message, "Hello ops from CN=ops []");
    // A bad certificate is still refused.
    let other = TestCa::new("another CA");
    let err = refused(&client(
        &server,
        &ca.cert_pem,
        Some(&other.client("m", &[])),
    ))
    .await;
    assert!(
        err.contains("does not trust the CA that signed our client certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn the_flags_configure_mutual_tls() {
    let ca = TestCa::new("rmicro test CA");
    let server_cert = ca.server();
    let path = |p: &std::path::Path| p.to_str().expect("a UTF-8 temp path").to_owned();
    let args = [
        "greeter".to_owned(),
        "--log-level".into(),
        "warn".into(),
        "--tls-cert-file".into(),
        path(&server_cert.cert_file),
        "--tls-key-file".into(),
        path(&server_cert.key_file),
        "--tls-client-ca-file".into(),
        path(&ca.cert_file()),
    ];
    let (_service, server) = start_with(PeerEcho, move |b| b.args(args)).await;
    let id = ca.client("flags", &[]);
    let reply = client(&server, &ca.cert_pem, Some(&id))
        .say_hello(hello("f"))
        .await
        .expect("served");
    assert_eq!(reply.message, "Hello f from CN=flags []");
    let err = refused(&client(&server, &ca.cert_pem, None)).await;
    assert!(err.contains("requires a client certificate"), "{err}");

    // The client side's flags: a service whose calls present a certificate.
    let caller = rmicro::Service::builder("caller")
        .registry(std::sync::Arc::new(rmicro::registry::MemoryRegistry::new()))
        .args([
            "caller".to_owned(),
            "--client-tls-ca".into(),
            path(&ca.cert_file()),
            "--client-tls-cert".into(),
            path(&id.cert_file),
            "--client-tls-key".into(),
            path(&id.key_file),
            "--client-route".into(),
            format!("greeter=localhost:{}", server.local_addr().port()),
        ])
        .build()
        .expect("valid flags");
    let reply = GreeterClient::new("greeter", caller.client())
        .say_hello(hello("c"))
        .await
        .expect("the flags' certificate is presented");
    assert_eq!(reply.message, "Hello c from CN=flags []");
    // Optional without the CA is refused with a sentence by the flag parser.
    let err = rmicro::Service::builder("x")
        .args(["x", "--tls-client-auth", "optional"])
        .build()
        .expect_err("--tls-client-auth needs --tls-client-ca-file");
    assert!(err.to_string().contains("--tls-client-ca-file"), "{err}");
}

#[tokio::test]
async fn certificates_reload_from_their_files_without_dropping_calls() {
    let first = TestCa::new("first CA");
    let second = TestCa::new("second CA");
    let dir = std::env::temp_dir().join(format!("rmicro-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    let install = |cert: &TestCert| {
        // Written next to the live files and renamed over them, as a certificate
        // manager does, so the server never reads half a file.
        for (from, to) in [(&cert.cert_pem, &cert_file), (&cert.key_pem, &key_file)] {
            let tmp = to.with_extension("new");
            std::fs::write(&tmp, from).expect("writes");
            std::fs::rename(&tmp, to).expect("renames");
        }
    };
    install(&first.server());
    let tls = ServerTls::from_files(&cert_file, &key_file).expect("valid files");
    let (_service, server) = start_with(PeerEcho, |b| b.tls(tls)).await;

    // A chat stays open across the reload.
    let old_client = client(&server, &first.cert_pem, None);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut chat = old_client
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the chat opens");
    tx.send(hello("before")).await.expect("sends");
    assert_eq!(
        chat.message().await.expect("reply").expect("one").message,
        "Hello before"
    );

    install(&second.server());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // A new client (new connection) trusting only the second CA.
        let attempt = client(&server, &second.cert_pem, None)
            .say_hello(hello("new"))
            .await;
        if attempt.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served: {attempt:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The call in flight on the old connection goes on.
    tx.send(hello("after")).await.expect("sends");
    assert_eq!(
        chat.message().await.expect("reply").expect("one").message,
        "Hello after"
    );
    drop(tx);
    assert!(chat.message().await.expect("ends cleanly").is_none());
    // New connections trusting only the first CA now fail.
    let err = refused(&client(&server, &first.cert_pem, None)).await;
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );

    // A broken file is not taken: the server keeps the last good certificate.
    std::fs::write(&cert_file, "not a certificate").expect("writes");
    tokio::time::sleep(ServerTls::reload_every() * 2).await;
    client(&server, &second.cert_pem, None)
        .say_hello(hello("still"))
        .await
        .expect("the previous certificate is still served");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_certificate_is_the_auth_principal_under_the_same_rules() {
    let ca = TestCa::new("rmicro test CA");
    let server_cert = ca.server();
    let secret = b"a secret of at least 32 bytes for the test";
    let auth = AuthLayer::hs256(secret)
        .peer("spiffe://acme/billing", &["refund"])
        .peer("CN=ops", &[])
        .require("greeter.Greeter.SayHello", &["refund"])
        .authenticated("greeter.Greeter.*");
    let (_service, server) = start_with(PeerEcho, |b| {
        b.tls(
            ServerTls::from_pem(server_cert.cert_pem.clone(), server_cert.key_pem.clone())
                .with_client_ca_pem(ca.cert_pem.clone())
                .client_auth(ClientAuth::Optional),
        )
        .wrap_handler(auth)
    })
    .await;
    // A SPIFFE identity the rules grant `refund`.
    let billing = ca.client("billing", &["spiffe://acme/billing"]);
    let reply = client(&server, &ca.cert_pem, Some(&billing))
        .say_hello(hello("b"))
        .await
        .expect("billing may call SayHello");
    assert_eq!(
        reply.message,
        r#"Hello b from CN=billing ["spiffe://acme/billing"] as spiffe://acme/billing ["refund"]"#
    );
    // An accepted identity without the scope: PERMISSION_DENIED naming what is missing.
    let ops = ca.client("ops", &[]);
    let err = client(&server, &ca.cert_pem, Some(&ops))
        .say_hello(hello("o"))
        .await
        .expect_err("ops lacks refund");
    assert_eq!(err.code, 403, "{err}");
    assert!(
        err.detail
            .contains("needs scope refund; the client certificate grants none"),
        "{err}"
    );
    // ...but may make an authenticated-only call (a stream: Collect).
    let reply = client(&server, &ca.cert_pem, Some(&ops))
        .collect(futures_util::stream::iter([hello("o")]))
        .await
        .expect("ops is authenticated");
    assert_eq!(reply.message, "Hello o");
    // A certificate of the CA that no peer rule names, and none at all:
    // UNAUTHENTICATED saying so.
    let stranger = ca.client("stranger", &["spiffe://acme/stranger"]);
    let err = client(&server, &ca.cert_pem, Some(&stranger))
        .say_hello(hello("s"))
        .await
        .expect_err("not accepted");
    assert_eq!(err.code, 401, "{err}");
    assert!(
        err.detail
            .contains("the client certificate (CN=stranger) is not one this service accepts"),
        "{err}"
    );
    let err = client(&server, &ca.cert_pem, None)
        .say_hello(hello("n"))
        .await
        .expect_err("nobody");
    assert_eq!(err.code, 401, "{err}");
    assert!(
        err.detail
            .contains("no client certificate this service accepts"),
        "{err}"
    );
    // A bearer token decides over the certificate when both are sent.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "ann", "scope": "refund", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("a token");
    let tls = ClientTls::default()
        .with_ca_pem(ca.cert_pem.as_bytes().to_vec())
        .with_domain("localhost")
        .with_identity_pem(
            ops.cert_pem.as_bytes().to_vec(),
            ops.key_pem.as_bytes().to_vec(),
        );
    let with_token = rmicro::Service::builder("caller")
        .registry(std::sync::Arc::new(rmicro::registry::MemoryRegistry::new()))
        .args(["caller"])
        .wrap_client(BearerToken::fixed(token))
        .build()
        .expect("valid");
    let client = with_token
        .client()
        .with_tls(tls)
        .with_route("greeter", server.local_addr().to_string());
    let reply = GreeterClient::new("greeter", client)
        .say_hello(hello("t"))
        .await
        .expect("the token grants refund");
    assert_eq!(reply.message, r#"Hello t from CN=ops [] as ann ["refund"]"#);
}
