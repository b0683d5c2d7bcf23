//! `rmicro web` in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver) with fantoccini. Three greeter processes with
//! `/metrics`, a frontend whose circuit to a dead `billing` opens (its Hystrix
//! stream advertised in the registry), a subscriber in a queue group, and a
//! hostile record; the test reads the pages as a user sees them.
//!
//! `RMICRO_SCREENSHOTS=DIR` keeps the screenshots (`scripts/screenshots` writes
//! them to `docs/screenshots/`); otherwise they go to a temporary directory.

mod common;

use fantoccini::{Client, ClientBuilder, Locator};
use rmicro::testing::ServerProcess;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOSTILE: &str = "<img src=x onerror=alert(1)><script>alert('x')</script>";

/// Chromium and chromedriver, or why the test cannot run.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = rmicro::testing::find_binary("chromium", "RMICRO_CHROMIUM");
    let driver = rmicro::testing::find_binary("chromedriver", "RMICRO_CHROMEDRIVER");
    let found = chromium.zip(driver);
    rmicro::testing::require(
        found,
        "chromium + chromedriver",
        "apt-get install -y chromium chromium-driver (scripts/test does)",
    )
}

/// A chromedriver on a free port; killed with the test.
async fn start_driver(driver: &Path, dir: &Path) -> (common::Guard, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let log = std::fs::File::create(dir.join("chromedriver.log")).expect("log file");
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("chromedriver starts");
    let guard = common::Guard(child);
    wait(
        "chromedriver to listen",
        Duration::from_secs(20),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    (guard, port)
}

/// Waits until `ready` holds, failing the test with `what` after `limit`.
async fn wait<F, Fut>(what: &str, limit: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !ready().await {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a JavaScript expression on the page.
async fn js(browser: &Client, expression: &str) -> serde_json::Value {
    browser
        .execute(&format!("return ({expression});"), vec![])
        .await
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until `expression` is true on the page.
async fn wait_js(browser: &Client, what: &str, expression: &str) {
    wait(what, Duration::from_secs(30), || async {
        js(browser, expression).await == serde_json::Value::Bool(true)
    })
    .await;
}

/// Saves a screenshot of the page as `name.png`.
async fn screenshot(browser: &Client, dir: &Path, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
}

/// A greeter process registered in `registry_dir`, with `/metrics`.
fn greeter(registry_dir: &Path) -> ServerProcess {
    let registry = registry_dir.display().to_string();
    ServerProcess::new("greeter", common::binary("greeter"), 2, move |_, ports| {
        [
            "--registry",
            "local",
            "--registry-address",
            &registry,
            "--server-address",
            &format!("127.0.0.1:{}", ports[0]),
            "--metrics-address",
            &format!("127.0.0.1:{}", ports[1]),
            "--log-level",
            "warn",
        ]
        .iter()
        .map(Into::into)
        .collect()
    })
    .expect("greeter prepared")
}

/// Sets the request of the call form of `endpoint`, submits it, and waits for its result.
async fn call_form(browser: &Client, endpoint: &str, request: &str) -> serde_json::Value {
    let form = format!("form.call[data-endpoint=\"{endpoint}\"]");
    let textarea = browser
        .find(Locator::Css(&format!("{form} textarea")))
        .await
        .expect("the request box");
    textarea.clear().await.expect("cleared");
    textarea.send_keys(request).await.expect("typed");
    let before = js(
        browser,
        &format!("document.querySelector('{form} .latency').textContent"),
    )
    .await;
    browser
        .find(Locator::Css(&format!("{form} button")))
        .await
        .expect("the Call button")
        .click()
        .await
        .expect("clicked");
    let done = format!(
        "document.querySelector('{form} .latency').textContent !== {before} && \
         document.querySelector('{form} .result').dataset.state !== 'calling'"
    );
    wait_js(browser, "the call's result", &done).await;
    js(
        browser,
        &format!(
            "{{state: document.querySelector('{form} .result').dataset.state, \
              reply: document.querySelector('{form} .reply').textContent, \
              id: document.querySelector('{form} .error-id').textContent, \
              code: document.querySelector('{form} .error-code').textContent, \
              detail: document.querySelector('{form} .error-detail').textContent, \
              latency: document.querySelector('{form} .latency').textContent}}"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_live_fleet_in_a_real_browser() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let dir = common::fresh_dir("web", "browser");
    let shots = std::env::var_os("RMICRO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("screenshots"));
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let registry_dir = dir.join("registry");
    let registry: rmicro::registry::SharedRegistry =
        std::sync::Arc::new(rmicro::registry::LocalRegistry::new(&registry_dir));

    // Three greeters, each its own process.
    let mut greeters: Vec<ServerProcess> = (0..3).map(|_| greeter(&registry_dir)).collect();
    for g in &mut greeters {
        g.start_listening().await.expect("greeter serves");
    }

    // A frontend whose calls to a dead `billing` open its circuit; it subscribes
    // to `user.created` in queue group `mailers`.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .to_string();
    registry
        .register(
            &rmicro::registry::testing::record("billing", "2.1.0", "billing-ghost", &dead),
            Duration::from_secs(300),
        )
        .await
        .expect("billing registered");
    let frontend = rmicro::Service::builder("frontend")
        .version("0.3.0")
        .address("127.0.0.1:0")
        .registry(registry.clone())
        .args([
            "frontend",
            "--log-level",
            "warn",
            "--hystrix-stream-address",
            "127.0.0.1:0",
        ])
        .handle(greeter::proto::GreeterServer::new(greeter::Greeter))
        .wrap_client(rmicro::wrapper::breaker::BreakerLayer::new(
            rmicro::wrapper::breaker::Settings {
                request_volume_threshold: 3,
                sleep_window: Duration::from_secs(600),
                ..Default::default()
            },
        ))
        .build()
        .expect("frontend built");
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let inbox = received.clone();
    frontend
        .subscribe_json::<serde_json::Value, _, _>(
            "user.created",
            rmicro::broker::SubscribeOptions::default().queue("mailers"),
            move |event| {
                let inbox = inbox.clone();
                async move {
                    inbox
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(event.message().clone());
                    Ok(())
                }
            },
        )
        .await
        .expect("subscribed");
    let _frontend_server = frontend.start().await.expect("frontend serves");
    for _ in 0..5 {
        let options = rmicro::CallOptions::new()
            .timeout(Duration::from_secs(1))
            .retries(0);
        let failed = frontend
            .client()
            .call_json("billing", "Billing.Charge", "{}", options)
            .await;
        assert!(failed.is_err(), "billing is dead");
    }

    // The dashboard, as shipped.
    let mut web = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(["web", "--registry", "local", "--registry-address"])
        .arg(&registry_dir)
        .args([
            "--address",
            "127.0.0.1:0",
            "--health-interval",
            "500ms",
            "--scrape-interval",
            "1s",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rmicro web starts");
    let stdout = web.stdout.take().expect("stdout");
    let _web = common::Guard(web);
    let line = rmicro::testing::read_until(stdout, Duration::from_secs(30), |line| {
        line.starts_with("rmicro web listening on ")
            .then(|| line.to_owned())
    });
    let base = line
        .trim_start_matches("rmicro web listening on ")
        .split_whitespace()
        .next()
        .expect("an URL")
        .to_owned();

    let (_driver, port) = start_driver(&driver, &dir).await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");

    // The list shows three greeters serving, and their numbers once traffic flows.
    browser
        .goto(&format!("{base}/"))
        .await
        .expect("services page");
    let row = "document.querySelector('tr[data-service=\"greeter\"]')";
    wait_js(
        &browser,
        "three greeters serving",
        &format!("{row} && {row}.querySelector('.nodes').textContent === '3' && {row}.querySelector('.serving').textContent === '3'"),
    )
    .await;
    let client = rmicro::Client::with_selector(
        Default::default(),
        std::sync::Arc::new(rmicro::selector::Selector::new(
            registry.clone(),
            rmicro::selector::Strategy::RoundRobin,
        )),
    );
    // Traffic while the page is watched, a failing call in ten, so the numbers move.
    let traffic = tokio::spawn(async move {
        for i in 0u64.. {
            let name = if i % 10 == 0 {
                String::new()
            } else {
                format!("n{i}")
            };
            let _ = client
                .call_json(
                    "greeter",
                    "Greeter.SayHello",
                    &serde_json::json!({ "name": name }).to_string(),
                    rmicro::CallOptions::new(),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    wait_js(
        &browser,
        "the greeters' numbers",
        &format!("{row}.querySelectorAll('td.num')[2] && {row}.querySelectorAll('td.num')[2].textContent.includes('s')"),
    )
    .await;
    screenshot(&browser, &shots, "services").await;

    // Killing one updates the page by itself: no reload, the event stream does it.
    let updates_before = js(
        &browser,
        "Number(document.querySelector('section.live').dataset.updates || 0)",
    )
    .await;
    browser
        .execute("window.__not_reloaded = true; return true;", vec![])
        .await
        .expect("marked");
    greeters[0].stop();
    wait_js(
        &browser,
        "the page to show two greeters after one was killed",
        &format!("{row}.querySelector('.nodes').textContent === '2' && {row}.querySelector('.serving').textContent === '2'"),
    )
    .await;
    assert_eq!(
        js(&browser, "window.__not_reloaded === true").await,
        serde_json::json!(true),
        "the page was not reloaded"
    );
    let updates_after = js(
        &browser,
        "Number(document.querySelector('section.live').dataset.updates || 0)",
    )
    .await;
    assert!(
        updates_after.as_f64() > updates_before.as_f64(),
        "{updates_before} → {updates_after}"
    );
    // The dead billing node shows as unreachable.
    wait_js(
        &browser,
        "billing unreachable",
        "document.querySelector('tr[data-service=\"billing\"] .badge.bad') !== null",
    )
    .await;

    // A service's page: nodes, field trees, and the call form.
    browser
        .goto(&format!("{base}/services/greeter"))
        .await
        .expect("service page");
    let prefilled = js(
        &browser,
        "document.querySelector('form.call[data-endpoint=\"Greeter.SayHello\"] textarea').value",
    )
    .await;
    let prefilled: serde_json::Value = serde_json::from_str(prefilled.as_str().expect("text"))
        .expect("the pre-filled request is JSON");
    assert_eq!(prefilled, serde_json::json!({"name": "", "count": 0}));
    assert_eq!(
        js(&browser, "Array.from(document.querySelectorAll('article[data-endpoint=\"Greeter.SayHello\"] ul.tree .field')).map(e => e.textContent).join(',')").await,
        serde_json::json!("name,count,message")
    );
    let hello = call_form(&browser, "Greeter.SayHello", r#"{"name": "Ann"}"#).await;
    assert_eq!(hello["state"], "ok", "{hello}");
    assert!(
        hello["reply"].as_str().unwrap_or("").contains("Hello Ann"),
        "{hello}"
    );
    assert!(
        hello["latency"].as_str().unwrap_or("").contains(" ms"),
        "{hello}"
    );
    let error = call_form(&browser, "Greeter.SayHello", r#"{"name": ""}"#).await;
    assert_eq!(error["state"], "error", "{error}");
    assert_eq!(error["id"], "greeter", "{error}");
    assert!(
        error["code"].as_str().unwrap_or("").starts_with("400"),
        "{error}"
    );
    assert_eq!(error["detail"], "name must not be empty", "{error}");
    let stream = call_form(
        &browser,
        "Greeter.SayHelloStream",
        r#"{"name": "Bo", "count": 2}"#,
    )
    .await;
    assert_eq!(stream["state"], "ok", "{stream}");
    assert_eq!(
        stream["reply"]
            .as_str()
            .unwrap_or("")
            .matches("Hello Bo")
            .count(),
        2,
        "{stream}"
    );
    // Typing something that is not JSON is refused before any call.
    let typo = call_form(&browser, "Greeter.SayHello", "{name: ").await;
    assert_eq!(typo["state"], "error", "{typo}");
    assert!(
        typo["detail"].as_str().unwrap_or("").contains("not JSON"),
        "{typo}"
    );
    call_form(&browser, "Greeter.SayHello", r#"{"name": "Ann"}"#).await;
    screenshot(&browser, &shots, "call").await;
    wait_js(
        &browser,
        "the greeters' chart",
        "document.querySelector('svg.chart polyline.line') !== null && document.querySelector('.rps') !== null && document.querySelector('.rps').textContent !== '0.00'",
    )
    .await;
    browser
        .execute("window.scrollTo(0, 0); return true;", vec![])
        .await
        .expect("scrolled");
    screenshot(&browser, &shots, "service").await;

    // Topics: the frontend's queue group, through its record and the HTTP broker's.
    browser
        .goto(&format!("{base}/topics"))
        .await
        .expect("topics page");
    wait_js(
        &browser,
        "user.created with its queue group",
        "Array.from(document.querySelectorAll('tr[data-topic=\"user.created\"]')).some(r => r.textContent.includes('frontend') && r.textContent.includes('mailers'))",
    )
    .await;
    // The publish form: through the dashboard's broker (the embedded HTTP one) to
    // the frontend's subscriber.
    let topic = browser
        .find(Locator::Css("form.publish input[name=topic]"))
        .await
        .expect("the topic box");
    topic.send_keys("user.created").await.expect("typed");
    let message = browser
        .find(Locator::Css("form.publish textarea"))
        .await
        .expect("the message box");
    message.clear().await.expect("cleared");
    message
        .send_keys(r#"{"id": 42, "name": "Ann"}"#)
        .await
        .expect("typed");
    browser
        .find(Locator::Css("form.publish button"))
        .await
        .expect("the Publish button")
        .click()
        .await
        .expect("clicked");
    wait_js(
        &browser,
        "the publish form's answer",
        "document.querySelector('form.publish .result').dataset.state === 'ok'",
    )
    .await;
    wait(
        "the frontend to receive the message",
        Duration::from_secs(20),
        || async {
            received
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&serde_json::json!({"id": 42, "name": "Ann"}))
        },
    )
    .await;
    screenshot(&browser, &shots, "topics").await;

    // Circuits: the frontend's stream, found through its node metadata.
    browser
        .goto(&format!("{base}/circuits"))
        .await
        .expect("circuits page");
    wait_js(
        &browser,
        "billing's circuit open",
        "Array.from(document.querySelectorAll('article.circuit.is-open')).some(a => a.dataset.circuit.startsWith('billing.'))",
    )
    .await;
    screenshot(&browser, &shots, "circuits").await;

    // A hostile record is text on the page, never markup or script.
    let mut hostile = rmicro::registry::testing::record(HOSTILE, HOSTILE, HOSTILE, &dead);
    hostile.nodes[0]
        .metadata
        .insert(HOSTILE.into(), HOSTILE.into());
    registry
        .register(&hostile, Duration::from_secs(300))
        .await
        .expect("hostile registered");
    browser
        .goto(&format!("{base}/"))
        .await
        .expect("services page");
    wait_js(
        &browser,
        "the hostile service listed",
        &format!("Array.from(document.querySelectorAll('tr[data-service]')).some(r => r.dataset.service === {})", serde_json::json!(HOSTILE)),
    )
    .await;
    let link = js(&browser, "Array.from(document.querySelectorAll('tr[data-service] a')).map(a => a.href).find(h => h.includes('%3Cimg'))").await;
    let link = link
        .as_str()
        .expect("a link to the hostile service")
        .to_owned();
    browser.goto(&link).await.expect("hostile service page");
    wait_js(
        &browser,
        "the hostile page",
        "document.querySelector('h1') !== null",
    )
    .await;
    assert_eq!(
        js(&browser, "document.querySelectorAll('img').length").await,
        serde_json::json!(0)
    );
    assert_eq!(
        js(&browser, "document.querySelectorAll('main script').length").await,
        serde_json::json!(0)
    );
    assert!(browser.get_alert_text().await.is_err(), "no script ran");
    assert_eq!(
        js(
            &browser,
            &format!(
                "document.querySelector('h1').textContent.includes({})",
                serde_json::json!(HOSTILE)
            )
        )
        .await,
        serde_json::json!(true)
    );
    assert_eq!(
        js(&browser, &format!("Array.from(document.querySelectorAll('dl.metadata dd')).some(d => d.textContent === {})", serde_json::json!(HOSTILE))).await,
        serde_json::json!(true)
    );

    traffic.abort();
    browser.close().await.expect("the session ends");
    if std::env::var_os("RMICRO_SCREENSHOTS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `rmicro web`'s flags: a wrong one is a sentence and exit code 1 before any
/// port is taken; `--basic-auth` asks browsers to sign in.
#[tokio::test(flavor = "multi_thread")]
async fn web_flags_are_checked_and_basic_auth_is_asked_for() {
    let dir = common::fresh_dir("web", "flags");
    for (flag, value, says) in [
        ("--basic-auth", "ops", "USER:PASSWORD"),
        ("--hystrix-stream", "ftp://host/x", "is not an http:// URL"),
        ("--address", "nowhere:99999", "cannot listen on"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rmicro"))
            .args(["web", "--registry", "local", "--registry-address"])
            .arg(&dir)
            .args([flag, value])
            .output()
            .expect("rmicro runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {stderr}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }

    let mut web = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(["web", "--registry", "local", "--registry-address"])
        .arg(&dir)
        .args(["--address", "127.0.0.1:0", "--basic-auth", "ops:s3cret"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("rmicro web starts");
    let stdout = web.stdout.take().expect("stdout");
    let _web = common::Guard(web);
    let base = rmicro::testing::read_until(stdout, Duration::from_secs(30), |line| {
        line.strip_prefix("rmicro web listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });
    let host = base.trim_start_matches("http://").to_owned();
    let get = |authorization: Option<&str>| {
        let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let Some(value) = authorization {
            request.push_str(&format!("Authorization: {value}\r\n"));
        }
        request.push_str("\r\n");
        let host = host.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&host)
                .await
                .expect("connects");
            stream.write_all(request.as_bytes()).await.expect("sent");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            answer
        }
    };
    let refused = get(None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"rmicro\""),
        "{refused}"
    );
    let wrong = get(Some("Basic b3BzOndyb25n")).await; // ops:wrong
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let page = get(Some("Basic b3BzOnMzY3JldA==")).await; // ops:s3cret
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<h1>Services</h1>"), "{page}");
    let _ = std::fs::remove_dir_all(&dir);
}
