//! The dashboard over real HTTP, in process: greeters in a memory registry, a
//! Hystrix stream given by URL (not advertised), bearer tokens with rules per
//! resource, and the call API's answers to bad input.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn http() -> Http {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends a request and reads the whole answer (status, body as text).
async fn send(
    http: &Http,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a request");
    let response = http.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_for(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready().await {
        assert!(Instant::now() < deadline, "waited 20 s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn greeter(registry: &rmicro::registry::SharedRegistry) -> rmicro::server::RunningServer {
    greeter::on_loopback()
        .version("1.0.0")
        .registry(registry.clone())
        .build()
        .expect("greeter built")
        .start()
        .await
        .expect("greeter serves")
}

fn token(secret: &[u8], scopes: &[&str]) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64(
        serde_json::json!({"sub": "ops", "exp": exp, "scopes": scopes})
            .to_string()
            .as_bytes(),
    );
    let signing = format!("{header}.{claims}");
    let signature = hmac_sha256(secret, signing.as_bytes());
    format!("{signing}.{}", b64(&signature))
}

/// HMAC-SHA256 (RFC 2104) over ring's SHA-256, to mint test tokens.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, message).as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_rules_streams_and_bad_calls_over_http() {
    let registry: rmicro::registry::SharedRegistry =
        Arc::new(rmicro::registry::MemoryRegistry::default());
    let _one = greeter(&registry).await;
    let _two = greeter(&registry).await;

    // A circuit that is open, on a Hystrix stream nobody advertises.
    let breaker = rmicro::wrapper::breaker::BreakerLayer::new(rmicro::wrapper::breaker::Settings {
        request_volume_threshold: 2,
        sleep_window: Duration::from_secs(600),
        ..Default::default()
    });
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .to_string();
    let caller =
        rmicro::Client::new(rmicro::client::ClientOptions::default().wrap_client(breaker.clone()));
    for _ in 0..3 {
        let options = rmicro::CallOptions::new()
            .address(&dead)
            .timeout(Duration::from_secs(1))
            .retries(0);
        assert!(
            caller
                .call_json("billing", "Billing.Charge", "{}", options)
                .await
                .is_err()
        );
    }
    let stream = rmicro::wrapper::breaker::HystrixStream::bind("127.0.0.1:0")
        .await
        .expect("a stream");

    let secret = b"a secret long enough for HS256 tokens";
    let tokens = rmicro::wrapper::auth::AuthLayer::hs256(secret)
        .authenticated("web.Page")
        .require("web.Call", &["operator"]);
    let broker: rmicro::broker::SharedBroker = Arc::new(rmicro::broker::MemoryBroker::new());
    let (delivered_tx, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    let _subscriber = broker
        .subscribe(
            "user.created",
            rmicro::broker::handler(move |delivery: rmicro::broker::Delivery| {
                let delivered_tx = delivered_tx.clone();
                async move {
                    let _ = delivered_tx.send(delivery.message.body.clone());
                    Ok(())
                }
            }),
            Default::default(),
        )
        .await
        .expect("subscribed");
    let options = rmicro_web::Options {
        broker: Some(broker.clone()),
        health_interval: Duration::from_millis(200),
        hystrix_streams: vec![format!("http://{}/hystrix.stream", stream.local_addr())],
        access: rmicro_web::Access::open().tokens(tokens),
        ..Default::default()
    };
    let dashboard = rmicro_web::Dashboard::start(options, registry.clone()).expect("started");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(dashboard.serve(listener));
    let http = http();

    // No token: 401 with a Bearer challenge; a forged one: 401.
    let (status, _) = send(&http, "GET", &format!("{base}/"), &[], "").await;
    assert_eq!(status, 401);
    let forged = token(b"another secret, not the dashboard's", &["operator"]);
    let forged = format!("Bearer {forged}");
    let (status, _) = send(
        &http,
        "GET",
        &format!("{base}/"),
        &[("authorization", &forged)],
        "",
    )
    .await;
    assert_eq!(status, 401);

    let viewer = format!("Bearer {}", token(secret, &[]));
    let operator = format!("Bearer {}", token(secret, &["operator"]));
    // Anyone signed in sees both greeters serving and the open circuit.
    wait_for("two greeters serving", async || {
        let (status, body) = send(
            &http,
            "GET",
            &format!("{base}/api/services"),
            &[("authorization", &viewer)],
            "",
        )
        .await;
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status == 200 && rows[0]["serving"] == 2 && rows[0]["name"] == "greeter"
    })
    .await;
    wait_for("billing's circuit open", async || {
        let (_, body) = send(
            &http,
            "GET",
            &format!("{base}/circuits"),
            &[("authorization", &viewer)],
            "",
        )
        .await;
        body.contains("billing.Billing.Charge") && body.contains(">OPEN<")
    })
    .await;

    // Calls need the operator scope.
    let call =
        r#"{"service": "greeter", "endpoint": "Greeter.SayHello", "request": {"name": "Ann"}}"#;
    let json = ("content-type", "application/json");
    let (status, body) = send(
        &http,
        "POST",
        &format!("{base}/api/call"),
        &[("authorization", &viewer), json],
        call,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = send(
        &http,
        "POST",
        &format!("{base}/api/call"),
        &[("authorization", &operator), json],
        call,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["ok"], true, "{body}");
    assert_eq!(answer["reply"]["message"], "Hello Ann", "{body}");

    // The publish form's API: the message reaches a subscriber, once.
    let (status, body) = send(
        &http,
        "POST",
        &format!("{base}/api/publish"),
        &[("authorization", &operator), json],
        r#"{"topic": "user.created", "message": {"id": 7}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\":true"), "{body}");
    let message = tokio::time::timeout(Duration::from_secs(10), delivered.recv())
        .await
        .expect("delivered in time")
        .expect("a message");
    let message: serde_json::Value = serde_json::from_slice(&message).expect("JSON");
    assert_eq!(message, serde_json::json!({"id": 7}));
    let (status, body) = send(
        &http,
        "POST",
        &format!("{base}/api/publish"),
        &[("authorization", &viewer), json],
        r#"{"topic": "user.created", "message": {}}"#,
    )
    .await;
    assert_eq!(status, 403, "viewers do not publish: {body}");
    let (status, body) = send(
        &http,
        "POST",
        &format!("{base}/api/publish"),
        &[("authorization", &operator), json],
        r#"{"topic": " ", "message": {}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("name the topic"), "{body}");
    assert!(delivered.try_recv().is_err(), "nothing else was delivered");

    // Bad input: sentences, never a crash.
    let post = async |headers: &[(&str, &str)], body: &str| {
        let mut all = vec![("authorization", operator.as_str())];
        all.extend_from_slice(headers);
        send(&http, "POST", &format!("{base}/api/call"), &all, body).await
    };
    let (status, body) = post(&[], call).await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/json"), "{body}");
    let (status, body) = post(&[json], "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("the call is not"), "{body}");
    let unknown = r#"{"service": "nobody", "endpoint": "No.Where", "request": {}}"#;
    let (status, body) = post(&[json], unknown).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["ok"], false, "{body}");
    assert!(
        answer["error"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("nobody"),
        "{body}"
    );
    let (status, body) = send(
        &http,
        "GET",
        &format!("{base}/services/nobody"),
        &[("authorization", &viewer)],
        "",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No service"), "{body}");

    // Every answer keeps the page to its own origin.
    let request = http::Request::get(format!("{base}/assets/app.js"))
        .header("authorization", &viewer)
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = http.request(request).await.expect("an answer");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
}
