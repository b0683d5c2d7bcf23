//! `rmicro api`, the shipped binary, in front of a real rmicro greeter and a stock
//! Python grpcio greeter (descriptors by its server reflection), driven by clients
//! that are not ours: `curl` (HTTP/1.1 and h2c) and Python's `httpx`.

mod common;

use common::{Guard, repo_root};
use greeter::proto::GreeterServer;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmicro::testing::python;

/// A fresh directory for a `local` registry the test's processes share.
fn registry_dir(test: &str) -> PathBuf {
    common::fresh_dir("api", test)
}

/// An rmicro greeter named `name` registered in the local registry at `dir`.
async fn greeter(name: &str, dir: &Path) -> (rmicro::Service, rmicro::server::RunningServer) {
    greeter_with(name, dir, &[]).await
}

/// [`greeter`] with `extra` flags.
async fn greeter_with(
    name: &str,
    dir: &Path,
    extra: &[&str],
) -> (rmicro::Service, rmicro::server::RunningServer) {
    let dir = dir.to_string_lossy().into_owned();
    let mut args = vec![
        name,
        "--log-level",
        "warn",
        "--registry",
        "local",
        "--registry-address",
        &dir,
    ];
    args.extend_from_slice(extra);
    let service = rmicro::Service::builder(name)
        .version("1.0.0")
        .address("127.0.0.1:0")
        .args(args)
        .handle(GreeterServer::new(greeter::Greeter))
        .build()
        .expect("valid flags");
    let server = service.start().await.expect("the greeter starts");
    (service, server)
}

/// `rmicro api` on a free port of loopback, reading the local registry at `dir`.
fn gateway_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rmicro"));
    command
        .args([
            "api",
            "--address",
            "127.0.0.1:0",
            "--registry",
            "local",
            "--registry-address",
        ])
        .arg(dir);
    command
}

/// The `rmicro api` binary on a free port over the registry at `dir`; its address.
fn gateway(dir: &Path, extra: &[&str]) -> (Guard, String) {
    let (guard, address, _) = gateway_printing(dir, extra);
    (guard, address)
}

/// [`gateway`], and the lines it printed before its address (`metrics at …`).
fn gateway_printing(dir: &Path, extra: &[&str]) -> (Guard, String, Vec<String>) {
    let mut command = gateway_command(dir);
    command.args(extra).stderr(Stdio::inherit());
    spawn_gateway(command)
}

/// Starts `command` (an `rmicro api` command line, its stderr set by the
/// caller); its address and the lines it printed before it.
fn spawn_gateway(mut command: Command) -> (Guard, String, Vec<String>) {
    // Killed however the test ends, from here on.
    let mut child = Guard(
        command
            .env("MICRO_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("rmicro api starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("rmicro api prints its address");
        if let Some(rest) = line.strip_prefix("rmicro api listening on ") {
            let address = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            return (child, address, printed);
        }
        printed.push(line);
    }
}

/// What curl got: status, headers (lower-case names) and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl` with `args` against `url`.
fn curl(args: &[&str], url: &str) -> Reply {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    // A 100 Continue (large bodies) comes before the real head.
    let text = text
        .strip_prefix("HTTP/1.1 100 Continue\n\n")
        .map(str::to_owned)
        .unwrap_or(text);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Asserts `reply` is go-micro's error JSON with `status`, its detail naming `fragment`.
fn expect_error(reply: &Reply, status: u16, fragment: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    let json = reply.json();
    assert_eq!(json["code"], status, "{reply:?}");
    let detail = json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(fragment), "`{fragment}` not in {reply:?}");
}

fn post(url: &str, json: &str) -> Reply {
    curl(
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            json,
        ],
        url,
    )
}

/// A Python grpcio server from `interop/` (it prints `PORT <n>`), registered in
/// the local registry at `dir` as `name`, as a deploy script or a sidecar would
/// register a stock server.
async fn python_server(
    python: &Path,
    script: &str,
    name: &str,
    dir: &Path,
) -> (
    Guard,
    rmicro::registry::SharedRegistry,
    rmicro::registry::Service,
) {
    let mut server = Guard(
        Command::new(python)
            .arg(repo_root().join("interop").join(script))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the Python server starts"),
    );
    let stdout = server.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its port");
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let (registry, record) =
        register_node(dir, name, &format!("127.0.0.1:{port}"), Vec::new()).await;
    (server, registry, record)
}

/// Runs the Python `script` (checks with clients that are not ours) against the
/// gateway at `base`; it must succeed and print `passed`.
async fn python_checks(python: PathBuf, script: &'static str, base: String, passed: &'static str) {
    let out = blocking(move || {
        Command::new(python)
            .args(["-c", script, &base])
            .output()
            .expect("python runs")
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(passed),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Registers one node of `name` at `address` in the local registry at `dir`, with
/// `endpoints` (registry names, `Foo.Call`).
async fn register_node(
    dir: &Path,
    name: &str,
    address: &str,
    endpoints: Vec<&str>,
) -> (rmicro::registry::SharedRegistry, rmicro::registry::Service) {
    let registry =
        rmicro::registry::from_flags("local", Some(&dir.to_string_lossy())).expect("registry");
    let record = rmicro::registry::Service {
        name: name.into(),
        version: "1".into(),
        endpoints: endpoints
            .into_iter()
            .map(|e| rmicro::registry::Endpoint {
                name: e.into(),
                ..Default::default()
            })
            .collect(),
        nodes: vec![rmicro::registry::Node {
            id: format!("{name}-1"),
            address: address.to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    };
    registry
        .register(&record, Duration::from_secs(60))
        .await
        .expect("registered");
    (registry, record)
}

/// Waits until `check` holds, failing after `limit`.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the blocking part ran")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_kind_and_error_row_through_the_binary() {
    let dir = registry_dir("routes");
    let (_service, _server) = greeter("greeter", &dir).await;
    let (_gateway, address) = gateway(&dir, &["--max-body-size", "4096"]);
    let base = format!("http://{address}");
    blocking(move || {
        // go-micro's rule, both spellings, and the gRPC path.
        for path in [
            "/greeter/say-hello",
            "/greeter/sayHello",
            "/greeter/greeter/say-hello",
            "/greeter.v1.Greeter/SayHello",
        ] {
            let r = post(&format!("{base}{path}"), r#"{"name": "ann"}"#);
            assert_eq!(r.status, 200, "{path}: {r:?}");
            assert_eq!(r.json()["message"], "Hello ann", "{path}");
            assert!(
                r.header("x-request-id").is_some_and(|id| id.len() >= 32),
                "{r:?}"
            );
        }
        // google.api.http bindings: a path variable, a body, a server stream.
        let r = curl(&[], &format!("{base}/v1/greeter/hello/a%20b"));
        assert_eq!(
            (r.status, r.json()["message"].as_str()),
            (200, Some("Hello a b")),
            "{r:?}"
        );
        let r = post(&format!("{base}/v1/greeter/hello"), r#"{"name": "body"}"#);
        assert_eq!(
            (r.status, r.json()["message"].as_str()),
            (200, Some("Hello body")),
            "{r:?}"
        );
        let r = curl(&[], &format!("{base}/v1/greeter/hello/st/stream?count=2"));
        let lines: Vec<&str> = r.body.lines().collect();
        assert_eq!(lines.len(), 2, "{r:?}");
        assert!(lines[1].contains("Hello st #2"), "{r:?}");
        // The path matches only the GET binding: a POST there is not routed.
        expect_error(
            &post(&format!("{base}/v1/greeter/hello/x"), "{}"),
            404,
            "for GET, not POST",
        );
        // Query parameters fill the request (a GET with no body), typed by field.
        let r = curl(&[], &format!("{base}/greeter/say-hello?name=q+p"));
        assert_eq!(
            (r.status, r.json()["message"].as_str()),
            (200, Some("Hello q p")),
            "{r:?}"
        );
        // HTTP/2 without TLS.
        let r = curl(
            &[
                "--http2-prior-knowledge",
                "-X",
                "POST",
                "-d",
                r#"{"name":"h2"}"#,
            ],
            &format!("{base}/greeter/say-hello"),
        );
        assert_eq!(
            (r.status, r.json()["message"].as_str()),
            (200, Some("Hello h2")),
            "{r:?}"
        );
        // A request id given is kept.
        let r = curl(
            &["-H", "x-request-id: req-42"],
            &format!("{base}/greeter/say-hello?name=id"),
        );
        assert_eq!(r.header("x-request-id"), Some("req-42"));

        // Server streaming: one JSON line per reply.
        let r = post(
            &format!("{base}/greeter/say-hello-stream"),
            r#"{"name": "s", "count": 3}"#,
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let lines: Vec<serde_json::Value> = r
            .body
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
        assert_eq!(messages, ["Hello s #1", "Hello s #2", "Hello s #3"]);

        // Errors: go-micro's JSON with the HTTP status of the gRPC code.
        let r = post(&format!("{base}/greeter/say-hello"), r#"{"name": ""}"#);
        assert_eq!(r.status, 400, "{r:?}");
        let e = r.json();
        assert_eq!(e["code"], 400);
        assert_eq!(e["status"], "Bad Request");
        assert!(
            e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("name must not be empty"),
            "{e}"
        );
        assert!(e["id"].is_string(), "{e}");
        expect_error(
            &post(&format!("{base}/greeter/say-hello"), r#"{"name": "#),
            400,
            "not valid JSON",
        );
        expect_error(
            &post(
                &format!("{base}/greeter/say-hello"),
                r#"{"name": "x", "count": "many"}"#,
            ),
            400,
            "`count`",
        );
        expect_error(
            &curl(&[], &format!("{base}/greeter/say-hello?count=many")),
            400,
            "`count`",
        );
        expect_error(
            &post(&format!("{base}/nosuch/thing"), "{}"),
            404,
            "no service `nosuch`",
        );
        expect_error(
            &post(&format!("{base}/greeter/greeter/nope"), "{}"),
            404,
            "no endpoint `Greeter.Nope`",
        );
        let r = post(&format!("{base}/no.such.Service/Method"), "{}");
        assert_eq!(r.status, 404, "{r:?}");
        let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(5000));
        expect_error(
            &post(&format!("{base}/greeter/say-hello"), &big),
            413,
            "4096",
        );
        // A timeout the request asks for: the handler gets the deadline.
        let r = curl(
            &["-H", "grpc-timeout: soon"],
            &format!("{base}/greeter/say-hello?name=t"),
        );
        assert_eq!(r.status, 400, "{r:?}");

        // CORS: a preflight is answered without a call, the origin echoed after.
        let r = curl(
            &[
                "-X",
                "OPTIONS",
                "-H",
                "origin: https://app.example",
                "-H",
                "access-control-request-method: POST",
                "-H",
                "access-control-request-headers: content-type",
            ],
            &format!("{base}/greeter/say-hello"),
        );
        assert_eq!(r.status, 204, "{r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert!(
            r.header("access-control-allow-methods")
                .is_some_and(|m| m.contains("POST"))
        );
        // micro v3's list of headers.
        assert!(
            r.header("access-control-allow-headers")
                .is_some_and(|h| h.contains("Content-Type") && h.contains("Authorization")),
            "{r:?}"
        );
        let r = curl(
            &["-H", "origin: https://app.example"],
            &format!("{base}/greeter/say-hello?name=c"),
        );
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example")
        );

        // The route table, served and printed.
        let r = curl(&[], &format!("{base}/routes"));
        assert_eq!(r.status, 200);
        let routes = r.json();
        let has = |path: &str, rule: &str| {
            routes.as_array().is_some_and(|all| {
                all.iter()
                    .any(|r| r["path"] == path && r["rule"] == rule && r["service"] == "greeter")
            })
        };
        assert!(has("/greeter/say-hello", "micro-path"), "{routes}");
        assert!(has("/greeter.v1.Greeter/SayHello", "grpc-path"), "{routes}");
        assert!(has("/greeter/say-hello-stream", "micro-path"), "{routes}");
        assert!(
            has("/v1/greeter/hello/{name}", "http-annotation"),
            "{routes}"
        );
        assert!(has("/v1/greeter/hello", "http-annotation"), "{routes}");
    })
    .await;
    let printed = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args([
            "api",
            "--print-routes",
            "--registry",
            "local",
            "--registry-address",
        ])
        .arg(&dir)
        .output()
        .expect("rmicro api --print-routes runs");
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let text = String::from_utf8_lossy(&printed.stdout);
    // The primary binding before its additional one, as declared.
    let primary = text.find("/v1/greeter/hello/{name}");
    let additional = text.find("/v1/greeter/hello ");
    assert!(
        primary.is_some() && additional.is_some() && primary < additional,
        "{text}"
    );
    assert!(
        text.contains("/greeter/say-hello ") && text.contains("/greeter.v1.Greeter/SayHello"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_follow_the_registry_without_a_restart() {
    let dir = registry_dir("live");
    let (_gateway, address) = gateway(&dir, &[]);
    let url = format!("http://{address}/hello2/greeter/say-hello");
    let routes = format!("http://{address}/routes");
    let (u, r) = (url.clone(), routes.clone());
    blocking(move || {
        assert_eq!(post(&u, r#"{"name":"x"}"#).status, 404);
        assert!(!curl(&[], &r).body.contains("hello2"));
    })
    .await;
    // A service that starts appears in the table by the watch alone (no request
    // names it first)...
    let (_service, server) = greeter("hello2", &dir).await;
    let (u, r) = (url.clone(), routes.clone());
    blocking(move || {
        wait_until(
            "the watch lists hello2's routes",
            Duration::from_secs(10),
            || curl(&[], &r).body.contains("/hello2/greeter/say-hello"),
        );
        let reply = post(&u, r#"{"name":"live"}"#);
        assert_eq!(
            (reply.status, reply.json()["message"].as_str()),
            (200, Some("Hello live")),
            "{reply:?}"
        );
    })
    .await;
    // ...and one that stops is gone, without the gateway restarting.
    assert!(server.stop().await, "the greeter stops cleanly");
    blocking(move || {
        wait_until("hello2's routes are gone", Duration::from_secs(10), || {
            !curl(&[], &routes).body.contains("hello2")
        });
        let reply = post(&url, r#"{"name":"gone"}"#);
        assert_eq!(reply.status, 404, "{reply:?}");
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stock_grpcio_server_is_transcoded_through_its_reflection() {
    let Some(python) = python() else { return };
    let dir = registry_dir("grpcio");
    let (_server, registry, record) =
        python_server(&python, "greeter_server.py", "pygreeter", &dir).await;
    let (_gateway, address) = gateway(&dir, &[]);
    let script = r#"
import json, sys, httpx
base = sys.argv[1]
r = httpx.post(base + "/pygreeter/greeter/say-hello", json={"name": "py"})
assert r.status_code == 200, (r.status_code, r.text)
assert r.json() == {"message": "Hello py"}, r.text
r = httpx.get(base + "/pygreeter/greeter/say-hello", params={"name": "query"})
assert r.json()["message"] == "Hello query", r.text
r = httpx.get(base + "/v1/greeter/hello/annotated")
assert r.json()["message"] == "Hello annotated", r.text
r = httpx.post(base + "/greeter.v1.Greeter/SayHello", json={"name": "grpc-path"})
assert r.json()["message"] == "Hello grpc-path", r.text
# What the server sends beside its reply comes back as grpc-gateway's headers.
r = httpx.post(base + "/pygreeter/greeter/say-hello", json={"name": "md"}, headers={"X-Echo": "ping"})
assert r.headers.get("grpc-metadata-x-echo") == "ping", r.headers
assert r.headers.get("grpc-trailer-x-served-by") == "grpcio", r.headers
r = httpx.post(base + "/pygreeter/greeter/say-hello", json={"name": ""})
assert r.status_code == 400, (r.status_code, r.text)
body = r.json()
assert set(body) == {"id", "code", "detail", "status"}, body
assert "name must not be empty" in body["detail"], body
with httpx.stream("POST", base + "/pygreeter/greeter/say-hello-stream", json={"name": "st", "count": 2}) as r:
    lines = [json.loads(l) for l in r.iter_lines() if l]
assert [l["message"] for l in lines] == ["Hello st #1", "Hello st #2"], lines
with httpx.stream("POST", base + "/pygreeter/greeter/say-hello-stream", json={"name": "st", "count": 1}, headers={"X-Echo": "streamed"}) as r:
    assert r.headers.get("grpc-metadata-x-echo") == "streamed", r.headers
    assert [json.loads(l)["message"] for l in r.iter_lines() if l] == ["Hello st #1"]
r = httpx.post(base + "/pygreeter/greeter/collect", json={})
assert r.status_code == 501, (r.status_code, r.text)
routes = httpx.get(base + "/routes").json()
assert any(x["path"] == "/pygreeter/greeter/say-hello" for x in routes), routes
print("httpx checks passed")
"#;
    python_checks(
        python,
        script,
        format!("http://{address}"),
        "httpx checks passed",
    )
    .await;
    let _ = registry.deregister(&record).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_passes_a_validator_that_is_not_ours() {
    let Some(python) = python() else { return };
    let dir = registry_dir("openapi");
    let (_service, _server) = greeter("greeter", &dir).await;
    let (_gateway, address) = gateway(&dir, &[]);
    let script = r#"
import sys, httpx
from openapi_spec_validator import validate
doc = httpx.get(sys.argv[1] + "/openapi.json").json()
validate(doc)
paths = doc["paths"]
hello = paths["/v1/greeter/hello/{name}"]["get"]
assert [p["name"] for p in hello["parameters"] if p["in"] == "path"] == ["name"], hello
assert any(p["name"] == "count" and p["in"] == "query" for p in hello["parameters"]), hello
assert "requestBody" in paths["/v1/greeter/hello"]["post"]
assert "/greeter.v1.Greeter/SayHello" in paths and "/greeter/say-hello" in paths
# Client-streaming endpoints cannot be called over plain HTTP: not listed.
assert "/greeter.v1.Greeter/Collect" not in paths
reply = doc["components"]["schemas"]["greeter.v1.HelloReply"]
assert reply["properties"]["message"] == {"type": "string"}, reply
req = doc["components"]["schemas"]["greeter.v1.HelloRequest"]
assert req["properties"]["count"]["format"] == "int32", req
print("openapi valid")
"#;
    python_checks(python, script, format!("http://{address}"), "openapi valid").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_handler_passes_the_whole_request_as_go_micro_does() {
    let Some(python) = python() else { return };
    let dir = registry_dir("apihandler");
    let (_server, registry, record) =
        python_server(&python, "api_handler_server.py", "foo", &dir).await;
    let (_gateway, address) = gateway(&dir, &["--handler", "api"]);
    let url = format!("http://{address}/foo/call?a=1&a=2");
    let r = blocking(move || {
        curl(
            &[
                "-X",
                "POST",
                "-H",
                "x-user: ann",
                "-H",
                "content-type: application/x-www-form-urlencoded",
                "-d",
                "name=ann&tag=x&tag=y",
            ],
            &url,
        )
    })
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-handled-by"), Some("python"), "{r:?}");
    let seen = r.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/foo/call");
    assert_eq!(seen["url"], "/foo/call?a=1&a=2");
    assert_eq!(seen["get"]["a"], serde_json::json!(["1", "2"]));
    assert_eq!(seen["post"]["tag"], serde_json::json!(["x", "y"]));
    assert_eq!(seen["header"]["X-User"], serde_json::json!(["ann"]));
    assert_eq!(seen["body"], "");
    // A JSON body arrives as it was sent.
    let url = format!("http://{address}/foo/call");
    let r = blocking(move || post(&url, r#"{"raw": true}"#)).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["body"], r#"{"raw": true}"#);
    let _ = registry.deregister(&record).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_handler_publishes_the_body_to_the_namespaced_topic() {
    let dir = registry_dir("event");
    // A subscriber on the embedded broker, found through the same registry.
    let mut subscriber = Guard(
        Command::new(env!("CARGO_BIN_EXE_rmicro"))
            .args([
                "subscribe",
                "go.micro.api.orders",
                "--registry",
                "local",
                "--registry-address",
            ])
            .arg(&dir)
            .env_remove("MICRO_BROKER")
            .env_remove("MICRO_BROKER_ADDRESS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rmicro subscribe starts"),
    );
    let stdout = subscriber.0.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (_gateway, address) = gateway(&dir, &["--handler", "event", "--namespace", "go.micro.api"]);
    let url = format!("http://{address}/orders/created");
    blocking(move || {
        // Until the subscriber is registered a publish reaches no one: publish
        // numbered events until one arrives, then check it is a whole one.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        loop {
            n += 1;
            let r = post(&url, &format!(r#"{{"order": {n}}}"#));
            assert_eq!(r.status, 202, "{r:?}");
            assert_eq!(r.json()["topic"], "go.micro.api.orders");
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
                assert!(
                    event["order"].as_u64().is_some_and(|o| o >= 1 && o <= n),
                    "{line}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no event reached the subscriber");
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_lets_in_only_the_origins_configured() {
    let dir = registry_dir("cors");
    let (_gateway, address) = gateway(
        &dir,
        &[
            "--cors-allowed-origins",
            "https://ok.example,https://also.example",
            "--cors-allowed-methods",
            "GET, POST",
        ],
    );
    let url = format!("http://{address}/routes");
    blocking(move || {
        let preflight = |origin: &str| {
            curl(
                &[
                    "-X",
                    "OPTIONS",
                    "-H",
                    &format!("origin: {origin}"),
                    "-H",
                    "access-control-request-method: GET",
                ],
                &url,
            )
        };
        let ok = preflight("https://ok.example");
        assert_eq!(ok.status, 204, "{ok:?}");
        assert_eq!(
            ok.header("access-control-allow-origin"),
            Some("https://ok.example")
        );
        assert_eq!(ok.header("access-control-allow-methods"), Some("GET, POST"));
        let other = preflight("https://evil.example");
        assert_eq!(other.status, 204, "{other:?}");
        assert_eq!(
            other.header("access-control-allow-origin"),
            None,
            "{other:?}"
        );
        let r = curl(&["-H", "origin: https://also.example"], &url);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://also.example")
        );
        let r = curl(&["-H", "origin: https://evil.example"], &url);
        assert_eq!(r.header("access-control-allow-origin"), None);
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_whose_nodes_cannot_be_reached_is_a_503() {
    let dir = registry_dir("ghost");
    // A record whose only node listens nowhere (a crashed server's, before its TTL).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = dead.local_addr().expect("its address").to_string();
    drop(dead);
    let (registry, record) = register_node(&dir, "ghost", &address, vec!["Ghost.Call"]).await;
    let (_gateway, gateway_address) = gateway(&dir, &["--timeout", "2s"]);
    let url = format!("http://{gateway_address}/ghost");
    let r = blocking(move || post(&url, "{}")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["code"], 503, "{r:?}");
    assert_eq!(r.json()["status"], "Service Unavailable", "{r:?}");
    let _ = registry.deregister(&record).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Established TCP connections on this machine whose far end is `port`
/// (`/proc/net/tcp`, state 01): the client side of connections to a server.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(3) == Some(&"01")
                && fields
                    .get(2)
                    .and_then(|far| far.rsplit(':').next())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    == Some(port)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_serve_connections_in_turn_each_with_its_own_upstream_connection() {
    let dir = registry_dir("threads");
    let (_service, server) = greeter("greeter", &dir).await;
    let port = server.local_addr().port();
    let before = connections_to(port);
    let (gateway, address) = gateway(&dir, &["--threads", "3"]);
    // Three serving threads, named for what they are (started as it begins
    // serving, just after it prints its address).
    let pid = gateway.0.id();
    let threads = || {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| name.starts_with("rmicro-api-"))
            .collect();
        names.sort();
        names
    };
    wait_until("three serving threads", Duration::from_secs(10), || {
        threads().len() >= 3
    });
    assert_eq!(threads(), ["rmicro-api-0", "rmicro-api-1", "rmicro-api-2"]);
    // Six requests, each on a connection of its own (curl's): each thread
    // serves two, and calls the greeter on a connection of its own.
    let url = format!("http://{address}/greeter/say-hello");
    let replies = blocking(move || {
        (0..6)
            .map(|i| post(&url, &format!(r#"{{"name": "n{i}"}}"#)))
            .collect::<Vec<_>>()
    })
    .await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["message"], format!("Hello n{i}"));
    }
    // One per thread, and at most one more: the one the gateway's own runtime
    // used if it read the greeter's descriptors by a call.
    let upstream = connections_to(port).saturating_sub(before);
    assert!(
        (3..=4).contains(&upstream),
        "{upstream} connections to the greeter"
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_handler_proxies_to_a_node_of_the_service() {
    let Some(python) = python() else { return };
    let dir = registry_dir("proxy");
    let (_server, registry, record) =
        python_server(&python, "http_echo_server.py", "web", &dir).await;
    let (_gateway, address) = gateway(&dir, &["--handler", "http"]);
    let url = format!("http://{address}/web/orders/7?full=1");
    let r =
        blocking(move || curl(&["-X", "PUT", "-H", "x-user: ann", "-d", "payload"], &url)).await;
    assert_eq!(r.status, 207, "{r:?}");
    assert_eq!(r.header("x-served-by"), Some("python-http"), "{r:?}");
    let seen = r.json();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/web/orders/7?full=1");
    assert_eq!(seen["x_user"], "ann");
    assert_eq!(seen["body"], "payload");
    let url = format!("http://{address}/nowhere/x");
    expect_error(
        &blocking(move || curl(&[], &url)).await,
        404,
        "no service `nowhere`",
    );
    let _ = registry.deregister(&record).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An answer of [`burst`]: status, `Retry-After`, body.
type Answered = (u16, String, String);

/// Sends `count` POSTs of `json` to `url` in one curl run (one connection), with
/// `header`; each answer's status, `Retry-After` and body, in order, and the
/// seconds the run took.
fn burst(url: &str, header: &str, json: &str, count: usize) -> (Vec<Answered>, f64) {
    let bodies = registry_dir("burst");
    let started = std::time::Instant::now();
    let mut command = Command::new("curl");
    command.args(["-s", "-S", "--max-time", "20"]);
    for i in 0..count {
        if i > 0 {
            command.arg("--next");
        }
        command.arg("-o").arg(bodies.join(i.to_string()));
        command.args([
            "-w",
            "%{http_code} %header{retry-after}\\n",
            "-H",
            header,
            "-H",
            "content-type: application/json",
            "-d",
            json,
            url,
        ]);
    }
    let out = command.output().expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seconds = started.elapsed().as_secs_f64();
    let answers = String::from_utf8_lossy(&out.stdout)
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let (code, retry) = line.split_once(' ').unwrap_or((line, ""));
            let body = std::fs::read_to_string(bodies.join(i.to_string())).unwrap_or_default();
            (code.parse().unwrap_or(0), retry.trim().to_owned(), body)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&bodies);
    (answers, seconds)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_refuses_a_client_over_it_and_not_the_others() {
    let dir = registry_dir("ratelimit");
    let (_service, _server) = greeter("greeter", &dir).await;
    let (_gateway, address) = gateway(
        &dir,
        &[
            "--ratelimit",
            "1",
            "--ratelimit-burst",
            "3",
            "--ratelimit-key",
            "header:x-api-key",
        ],
    );
    let url = format!("http://{address}/greeter/greeter/say-hello");
    blocking(move || {
        let (answers, seconds) = burst(&url, "x-api-key: a", r#"{"name":"rl"}"#, 12);
        assert_eq!(answers.len(), 12, "{answers:?}");
        // The burst passes; then one a second at most.
        assert!(answers[..3].iter().all(|(c, ..)| *c == 200), "{answers:?}");
        let admitted = answers.iter().filter(|(c, ..)| *c == 200).count();
        assert!(
            admitted as f64 <= 3.0 + seconds.ceil(),
            "{admitted} admitted in {seconds:.2}s: {answers:?}"
        );
        let refused: Vec<_> = answers.iter().filter(|(c, ..)| *c == 429).collect();
        assert!(!refused.is_empty(), "{answers:?}");
        assert_eq!(
            refused.len() + admitted,
            12,
            "only 200s and 429s: {answers:?}"
        );
        for (_, retry, body) in &refused {
            assert_eq!(retry, "1", "{answers:?}");
            let json: serde_json::Value = serde_json::from_str(body).expect("error JSON");
            assert_eq!(json["code"], 429, "{body}");
            let detail = json["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("limit 1/s per x-api-key a (--ratelimit)"),
                "{body}"
            );
        }
        // Another key has its own bucket.
        let (answers, _) = burst(&url, "x-api-key: b", r#"{"name":"b"}"#, 6);
        assert!(answers[..3].iter().all(|(c, ..)| *c == 200), "{answers:?}");
        assert!(answers.iter().any(|(c, ..)| *c == 429), "{answers:?}");
        // Preflights are not counted.
        let preflight = curl(
            &[
                "-X",
                "OPTIONS",
                "-H",
                "origin: https://x.example",
                "-H",
                "access-control-request-method: POST",
                "-H",
                "x-api-key: b",
            ],
            &url,
        );
        assert_eq!(preflight.status, 204, "{preflight:?}");
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_http2_and_http1_to_clients_that_trust_its_ca() {
    let dir = registry_dir("tls");
    let (_service, _server) = greeter("greeter", &dir).await;
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("test cert");
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, ca.cert.pem()).expect("write cert");
    std::fs::write(&key_file, ca.signing_key.serialize_pem()).expect("write key");
    let (_gateway, address) = gateway(
        &dir,
        &[
            "--tls-cert-file",
            cert_file.to_str().expect("utf-8 path"),
            "--tls-key-file",
            key_file.to_str().expect("utf-8 path"),
        ],
    );
    let port = address.rsplit(':').next().expect("a port").to_owned();
    let url = format!("https://localhost:{port}/greeter/say-hello");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca_path = cert_file.to_string_lossy().into_owned();
    let (url2, ca2) = (url.clone(), ca_path.clone());
    let (url3, port3) = (url.clone(), port.clone());
    blocking(move || {
        for (version, expected) in [("--http2", "HTTP/2 200"), ("--http1.1", "HTTP/1.1 200")] {
            let out = Command::new("curl")
                .args(["-s", "-S", "-i", "--max-time", "20", version])
                .args(["--cacert", &ca_path, "--resolve", &resolve])
                .args(["-H", "content-type: application/json"])
                .args(["-d", r#"{"name":"tls"}"#, &url])
                .output()
                .expect("curl runs");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.starts_with(expected),
                "{version}: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains(r#""message":"Hello tls""#), "{text}");
        }
        // A client that does not trust the certificate is refused by its own check,
        // and plain HTTP to the TLS port gets no answer; the gateway keeps serving.
        let untrusted = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "--resolve",
                &resolve,
                "-d",
                "{}",
                &url,
            ])
            .output()
            .expect("curl runs");
        assert_eq!(
            untrusted.status.code(),
            Some(60),
            "curl's 'peer certificate cannot be authenticated'"
        );
        let plain = Command::new("curl")
            .args(["-s", "--max-time", "10", "-d", "{}"])
            .arg(format!("http://127.0.0.1:{port}/greeter/say-hello"))
            .output()
            .expect("curl runs");
        assert!(
            !plain.status.success(),
            "plain HTTP on the TLS port answered"
        );
    })
    .await;
    if let Some(python) = python() {
        let script = r#"
import sys, httpx
url, ca = sys.argv[1], sys.argv[2]
with httpx.Client(verify=ca, http2=False) as c:
    r = c.post(url, json={"name": "httpx"})
assert r.status_code == 200 and r.json()["message"] == "Hello httpx", r.text
assert r.http_version == "HTTP/1.1", r.http_version
print("tls checks passed")
"#;
        let out = blocking(move || {
            Command::new(python)
                .args(["-c", script, &url2, &ca2])
                .env("SSL_CERT_FILE", &ca2)
                .output()
                .expect("python runs")
        })
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("tls checks passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A new certificate renamed over the files (as a certificate manager does) is
    // served to new connections without a restart; the old one is no longer.
    let old_ca = dir.join("old-ca.pem");
    std::fs::copy(&cert_file, &old_ca).expect("keep the old certificate");
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("test cert");
    for (text, file) in [
        (renewed.cert.pem(), &cert_file),
        (renewed.signing_key.serialize_pem(), &key_file),
    ] {
        let tmp = file.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, file).expect("rename");
    }
    let resolve = format!("localhost:{port3}:127.0.0.1");
    let url = url3;
    let curl = move |ca: &std::path::Path| {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10"])
            .arg("--cacert")
            .arg(ca)
            .args([
                "--resolve",
                &resolve,
                "-H",
                "content-type: application/json",
            ])
            .args(["-d", r#"{"name":"renewed"}"#, &url])
            .output()
            .expect("curl runs")
            .status
            .code()
    };
    let (new_ca, old) = (cert_file.clone(), old_ca.clone());
    blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while curl(&new_ca) != Some(0) {
            assert!(
                std::time::Instant::now() < deadline,
                "the renewed certificate was never served"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(curl(&old), Some(60), "the old certificate is still served");
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_certificate_that_cannot_be_read_stops_the_gateway_with_a_sentence() {
    let dir = registry_dir("badtls");
    let garbage = dir.join("cert.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let out = gateway_command(&dir)
        .arg("--tls-cert-file")
        .arg(&garbage)
        .arg("--tls-key-file")
        .arg(dir.join("missing-key.pem"))
        .output()
        .expect("rmicro runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--tls-cert-file/--tls-key-file: cannot read TLS file")
            && stderr.contains("missing-key.pem"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The OTLP receiver of `interop/otlp_receiver.py`, its OTLP/gRPC endpoint, a
/// fresh registry directory, and an rmicro greeter in it tracing to the receiver.
async fn traced_greeter(
    python: &Path,
    test: &str,
) -> (
    rmicro::testing::OtlpReceiver,
    String,
    PathBuf,
    (rmicro::Service, rmicro::server::RunningServer),
) {
    let receiver =
        rmicro::testing::OtlpReceiver::start(python, &repo_root().join("interop/otlp_receiver.py"))
            .expect("the OTLP receiver prints its ports");
    let endpoint = format!("http://127.0.0.1:{}", receiver.grpc);
    let dir = registry_dir(test);
    let greeter = greeter_with("greeter", &dir, &["--tracing-endpoint", &endpoint]).await;
    (receiver, endpoint, dir, greeter)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_one_trace_with_the_caller_and_is_counted() {
    let Some(python) = python() else { return };
    let (receiver, endpoint, dir, _greeter) = traced_greeter(&python, "tracing").await;
    let (_gateway, address, printed) = gateway_printing(
        &dir,
        &[
            "--tracing-endpoint",
            &endpoint,
            "--metrics-address",
            "127.0.0.1:0",
        ],
    );
    let metrics_url = printed
        .iter()
        .find_map(|l| l.strip_prefix("metrics at "))
        .unwrap_or_else(|| panic!("the metrics address is printed: {printed:?}"))
        .to_owned();
    // The caller's trace, as a browser's or another service's W3C header says.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("traceparent: 00-{caller_trace}-{caller_span}-01");
    let url = format!("http://{address}/greeter/say-hello");
    let (hello_url, notfound_url) = (url.clone(), format!("http://{address}/nowhere/at/all"));
    let (joined, garbage) = blocking(move || {
        let joined = curl(
            &[
                "-H",
                &traceparent,
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"name":"traced"}"#,
            ],
            &hello_url,
        );
        let garbage = curl(
            &[
                "-H",
                "traceparent: 00-nonsense-01",
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"name":"fresh"}"#,
            ],
            &hello_url,
        );
        let _ = curl(&["-d", "{}"], &notfound_url);
        (joined, garbage)
    })
    .await;
    assert_eq!(joined.status, 200, "{joined:?}");
    assert_eq!(
        garbage.status, 200,
        "a garbage traceparent is no error: {garbage:?}"
    );
    // joined: gateway SERVER + CLIENT, greeter SERVER; fresh: the same three;
    // the 404: one SERVER span.
    let spans = receiver
        .wait_until(
            "seven spans, three in each of the two traces that reached the greeter",
            Duration::from_secs(30),
            |spans| {
                let mut per_trace = std::collections::HashMap::new();
                for span in spans {
                    *per_trace.entry(span["trace_id"].to_string()).or_insert(0) += 1;
                }
                spans.len() >= 7 && per_trace.values().filter(|&&n| n >= 3).count() >= 2
            },
        )
        .await;
    let in_trace: Vec<_> = spans
        .iter()
        .filter(|s| s["trace_id"] == caller_trace)
        .collect();
    assert_eq!(in_trace.len(), 3, "{in_trace:#?}");
    let find = |kind: &str, service: &str| {
        *in_trace
            .iter()
            .find(|s| s["kind"] == kind && s["resource"]["service.name"] == service)
            .unwrap_or_else(|| panic!("a {kind} span of {service} in {in_trace:#?}"))
    };
    let http = find("SPAN_KIND_SERVER", "rmicro-api");
    assert_eq!(http["parent_span_id"], caller_span, "{http}");
    assert_eq!(http["name"], "POST /greeter/say-hello", "{http}");
    assert_eq!(http["attributes"]["http.request.method"], "POST");
    assert_eq!(http["attributes"]["http.response.status_code"], 200);
    assert_eq!(http["attributes"]["http.route"], "/greeter/say-hello");
    assert_eq!(
        http["attributes"]["micro.endpoint"],
        "greeter.Greeter.SayHello"
    );
    let call = find("SPAN_KIND_CLIENT", "rmicro-api");
    assert_eq!(call["parent_span_id"], http["span_id"], "{call}");
    assert_eq!(call["name"], "greeter.v1.Greeter/SayHello");
    let handled = find("SPAN_KIND_SERVER", "greeter");
    assert_eq!(handled["parent_span_id"], call["span_id"], "{handled}");
    // The garbage header started a trace of its own, whole.
    let fresh_root = spans
        .iter()
        .find(|s| {
            s["kind"] == "SPAN_KIND_SERVER"
                && s["resource"]["service.name"] == "rmicro-api"
                && s["trace_id"] != caller_trace
                && s["attributes"]["http.response.status_code"] == 200
        })
        .expect("the fresh trace's gateway span");
    assert_eq!(fresh_root["parent_span_id"], "", "{fresh_root}");
    let fresh: Vec<_> = spans
        .iter()
        .filter(|s| s["trace_id"] == fresh_root["trace_id"])
        .collect();
    assert_eq!(fresh.len(), 3, "{fresh:#?}");
    let missing = spans
        .iter()
        .find(|s| s["attributes"]["http.response.status_code"] == 404)
        .expect("the 404's span");
    assert_eq!(
        missing["name"], "POST",
        "no route, no route in the name: {missing}"
    );
    assert_eq!(
        missing["status"]["code"], "STATUS_CODE_UNSET",
        "a 4xx is the client's: {missing}"
    );

    // Prometheus reads what was answered and what was called.
    let page = blocking(move || curl(&[], &metrics_url)).await;
    assert_eq!(page.status, 200, "{page:?}");
    let value = |line_start: &str| {
        page.body
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("`{line_start}` on the page:\n{}", page.body))
    };
    assert_eq!(
        value(r#"micro_api_requests_total{http_method="POST",http_status="200"}"#),
        2.0
    );
    assert_eq!(
        value(r#"micro_api_requests_total{http_method="POST",http_status="404"}"#),
        1.0
    );
    assert_eq!(
        value(r#"micro_api_request_duration_seconds_count{http_method="POST"}"#),
        3.0
    );
    assert!(
        page.body
            .lines()
            .any(|l| l.starts_with("micro_client_request_total{")
                && l.contains(r#"micro_target="greeter""#)
                && l.ends_with(" 2")),
        "the client's calls are counted:\n{}",
        page.body
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_and_bidi_streams_go_over_websocket() {
    let Some(python) = python() else { return };
    let dir = registry_dir("websocket");
    let (_service, _server) = greeter("greeter", &dir).await;
    let (_py, _registry, _record) =
        python_server(&python, "greeter_server.py", "pygreeter", &dir).await;
    let (_gateway, address) = gateway(&dir, &[]);
    let script = r#"
import json, sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed
base = sys.argv[1].replace("http://", "ws://")

def stream(path, messages, closes=True):
    """Sends each message, then reads until the gateway closes: the replies
    (JSON), and the close code and reason."""
    replies = []
    with connect(base + path, open_timeout=10, close_timeout=5) as ws:
        for m in messages:
            ws.send(m)
        try:
            while True:
                replies.append(json.loads(ws.recv(timeout=10)))
        except ConnectionClosed as e:
            return replies, e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else None

for service in ["greeter", "pygreeter"]:
    # Bidirectional: a reply per request, as they come; EOF ends the requests.
    with connect(base + f"/{service}/greeter/chat", open_timeout=10) as ws:
        ws.send(json.dumps({"name": "a"}))
        assert json.loads(ws.recv(timeout=10)) == {"message": "Hello a"}
        ws.send(json.dumps({"name": "b"}))
        assert json.loads(ws.recv(timeout=10)) == {"message": "Hello b"}
        ws.send("EOF")
        try:
            extra = ws.recv(timeout=10)
            raise AssertionError(f"no reply after EOF, got {extra}")
        except ConnectionClosed as e:
            assert e.rcvd.code == 1000 and e.rcvd.reason == "OK", e
    # Client streaming: one reply when the requests end.
    replies, code, reason = stream(f"/{service}/greeter/collect",
        [json.dumps({"name": n}) for n in ["x", "y", "z"]] + [""])
    assert replies == [{"message": "Hello x, y, z"}], replies
    assert (code, reason) == (1000, "OK"), (code, reason)
    # Server streaming takes its one request from the first message.
    replies, code, _ = stream(f"/{service}/greeter/say-hello-stream", [json.dumps({"name": "s", "count": 2})])
    assert [r["message"] for r in replies] == ["Hello s #1", "Hello s #2"], replies
    assert code == 1000

# A request that is not the message: the error, then 1008; the gateway goes on.
replies, code, reason = stream("/greeter/greeter/chat", [json.dumps({"name": 5})])
assert len(replies) == 1 and replies[0]["error"]["code"] == 400, replies
assert "name" in replies[0]["error"]["detail"], replies
assert code == 1008, (code, reason)
# The handler's own error: its detail, then 1008 (a 400 is the client's).
replies, code, reason = stream("/greeter/greeter/chat", [json.dumps({"name": ""})])
assert replies[-1]["error"]["detail"] == "name must not be empty", replies
assert code == 1008 and reason == "name must not be empty", (code, reason)
# A second request to a method that takes one is refused.
# (Whether the reply or the refusal comes first is a race; each ends its own way.)
replies, code, _ = stream("/greeter/greeter/say-hello", [json.dumps({"name": "one"}), json.dumps({"name": "two"})])
if replies == [{"message": "Hello one"}]:
    assert code == 1000, (replies, code)
else:
    assert "takes one request" in replies[-1]["error"]["detail"], replies
    assert code == 1008, (replies, code)
# An unknown route is refused before the upgrade, as for plain HTTP.
try:
    with connect(base + "/nowhere/at/all", open_timeout=10):
        raise AssertionError("upgraded an unknown route")
except Exception as e:
    assert "404" in str(e), e
print("websocket checks passed")
"#;
    python_checks(
        python,
        script,
        format!("http://{address}"),
        "websocket checks passed",
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_are_ecs_with_the_route_and_the_trace() {
    let dir = registry_dir("accesslog");
    let (_service, _server) = greeter("greeter", &dir).await;
    let log = dir.join("gateway.log");
    let mut command = gateway_command(&dir);
    command
        .args(["--access-log", "--log-format", "ecs", "--log-level", "info"])
        // A collector nobody listens on: spans are made (and dropped), ids logged.
        .args(["--tracing-endpoint", "http://127.0.0.1:9"])
        .stderr(std::fs::File::create(&log).expect("log file"));
    let (gateway, address, _) = spawn_gateway(command);
    let base = format!("http://{address}");
    let traceparent = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    blocking(move || {
        let ok = curl(
            &["-H", "x-request-id: rid-7", "-H", traceparent],
            &format!("{base}/v1/greeter/hello/ann"),
        );
        assert_eq!(ok.status, 200, "{ok:?}");
        let missing = curl(&["-d", "{}"], &format!("{base}/nowhere/at/all"));
        assert_eq!(missing.status, 404, "{missing:?}");
    })
    .await;
    let written = log.clone();
    let lines = blocking(move || wait_for_lines(&written, 2)).await;
    drop(gateway);
    let ok = lines
        .iter()
        .find(|l| l["http.request.id"] == "rid-7")
        .unwrap_or_else(|| panic!("the 200's line: {lines:#?}"));
    assert_eq!(ok["message"], "request");
    assert_eq!(ok["ecs.version"], "8.11.0");
    assert_eq!(ok["service.name"], "rmicro-api");
    assert_eq!(ok["http.request.method"], "GET");
    assert_eq!(ok["url.path"], "/v1/greeter/hello/ann");
    assert_eq!(
        ok["http.route"], "/v1/greeter/hello/{name}",
        "the template, not the path"
    );
    assert_eq!(ok["http.response.status_code"], 200);
    assert_eq!(ok["micro.endpoint"], "greeter.Greeter.SayHello");
    assert_eq!(
        ok["trace.id"], "0af7651916cd43dd8448eb211c80319c",
        "the caller's trace"
    );
    assert!(
        ok["span.id"].as_str().is_some_and(|s| s.len() == 16),
        "{ok}"
    );
    assert!(
        ok["event.duration"].as_u64().is_some_and(|ns| ns > 0),
        "{ok}"
    );
    let missing = lines
        .iter()
        .find(|l| l["http.response.status_code"] == 404)
        .unwrap_or_else(|| panic!("the 404's line: {lines:#?}"));
    assert!(
        missing.get("http.route").is_none(),
        "no route, no field: {missing}"
    );
    assert!(
        missing["http.request.id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "a generated request id: {missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JSON lines with `"message":"request"` in `path`, once there are `n`.
fn wait_for_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    wait_until(
        &format!("{n} access log lines"),
        Duration::from_secs(10),
        || {
            lines = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| l["message"] == "request")
                .collect();
            lines.len() >= n
        },
    );
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_stream_is_traced_under_its_request() {
    let Some(python) = python() else { return };
    let (receiver, endpoint, dir, _greeter) = traced_greeter(&python, "wstrace").await;
    let (_gateway, address) = gateway(&dir, &["--tracing-endpoint", &endpoint]);
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let script = r#"
import json, sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed
base = sys.argv[1].replace("http://", "ws://")
headers = {"traceparent": "00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01"}
with connect(base + "/greeter/greeter/chat", additional_headers=headers, open_timeout=10) as ws:
    ws.send(json.dumps({"name": "traced"}))
    assert json.loads(ws.recv(timeout=10)) == {"message": "Hello traced"}
    ws.send("EOF")
    try:
        ws.recv(timeout=10)
    except ConnectionClosed as e:
        assert e.rcvd.code == 1000, e
print("ws trace checks passed")
"#;
    python_checks(
        python,
        script,
        format!("http://{address}"),
        "ws trace checks passed",
    )
    .await;
    let spans = receiver
        .wait_until(
            "the stream's three spans",
            Duration::from_secs(30),
            |spans| spans.iter().filter(|s| s["trace_id"] == trace).count() >= 3,
        )
        .await;
    let in_trace: Vec<_> = spans.iter().filter(|s| s["trace_id"] == trace).collect();
    let find = |kind: &str, service: &str| {
        *in_trace
            .iter()
            .find(|s| s["kind"] == kind && s["resource"]["service.name"] == service)
            .unwrap_or_else(|| panic!("a {kind} span of {service} in {in_trace:#?}"))
    };
    let http = find("SPAN_KIND_SERVER", "rmicro-api");
    assert_eq!(http["parent_span_id"], "10f067aa0ba902b7", "{http}");
    assert_eq!(
        http["attributes"]["http.response.status_code"], 101,
        "{http}"
    );
    let call = find("SPAN_KIND_CLIENT", "rmicro-api");
    assert_eq!(call["name"], "greeter.v1.Greeter/Chat");
    assert_eq!(
        call["parent_span_id"], http["span_id"],
        "the stream's call is the request's child"
    );
    let handled = find("SPAN_KIND_SERVER", "greeter");
    assert_eq!(handled["parent_span_id"], call["span_id"], "{handled}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `curl ARGS -w <status>`: the HTTP status and the body.
fn curl_status(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or_default(), body.to_owned())
}

#[test]
fn curl_drives_the_shipped_user_binary_through_the_shipped_gateway() {
    if rmicro::testing::curl().is_none() {
        return;
    }
    let dir = registry_dir("user");
    let registry = dir.to_string_lossy().into_owned();
    let mut user = Guard(
        Command::new(common::binary("user"))
            .current_dir(&dir)
            .args([
                "--server-address",
                "127.0.0.1:0",
                "--registry",
                "local",
                "--registry-address",
                &registry,
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the user binary starts"),
    );
    let _ = rmicro::testing::listening_address(user.0.stderr.take().expect("stderr"));
    let (_gateway, address) = gateway(&dir, &[]);
    let base = format!("http://{address}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !curl_status(&[&format!("{base}/routes")])
        .1
        .contains("/v1/users/login")
    {
        assert!(Instant::now() < deadline, "the user routes within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let json = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    let register = r#"{"user_name": "ann", "first_name": "Ann", "email": "ann@example.com", "password": "correct horse"}"#;
    let (status, body) = curl_status(&["-X", "POST", &format!("{base}/v1/users"), "-d", register]);
    assert_eq!(status, 200, "{body}");
    let id = json(&body)["userId"]
        .as_str()
        .expect("an id (int64 as a JSON string)")
        .to_owned();
    let (status, body) = curl_status(&["-X", "POST", &format!("{base}/v1/users"), "-d", register]);
    assert_eq!(
        (status, json(&body)["code"].as_u64()),
        (409, Some(409)),
        "{body}"
    );
    let (status, body) = curl_status(&[
        "-X",
        "POST",
        &format!("{base}/v1/users/login"),
        "-d",
        r#"{"user_name": "ann", "password": "wrong password"}"#,
    ]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = curl_status(&[
        "-X",
        "POST",
        &format!("{base}/v1/users/login"),
        "-d",
        r#"{"user_name": "ann", "password": "correct horse"}"#,
    ]);
    assert_eq!(status, 200, "{body}");
    let bearer = format!(
        "authorization: Bearer {}",
        json(&body)["token"].as_str().expect("a token")
    );
    let (status, body) = curl_status(&[&format!("{base}/v1/users/{id}")]);
    assert_eq!(status, 401, "no token: {body}");
    let (status, body) = curl_status(&["-H", &bearer, &format!("{base}/v1/users/{id}")]);
    assert_eq!(
        (status, json(&body)["userName"].as_str()),
        (200, Some("ann")),
        "{body}"
    );
    let (status, body) = curl_status(&["-H", &bearer, &format!("{base}/v1/users/by-name/ann")]);
    assert_eq!(
        (status, json(&body)["userId"].as_str()),
        (200, Some(id.as_str())),
        "{body}"
    );
    let (status, body) = curl_status(&[
        "-H",
        &bearer,
        "-X",
        "PATCH",
        &format!("{base}/v1/users/{id}"),
        "-d",
        r#"{"firstName": "Annie"}"#,
    ]);
    assert_eq!(
        (status, json(&body)["firstName"].as_str()),
        (200, Some("Annie")),
        "{body}"
    );
    let (status, body) = curl_status(&["-H", &bearer, &format!("{base}/v1/users?page_size=10")]);
    assert_eq!(
        (status, json(&body)["users"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );
    let (status, body) = curl_status(&[
        "-H",
        &bearer,
        "-X",
        "DELETE",
        &format!("{base}/v1/users/{id}"),
    ]);
    assert!(status == 200 || status == 204, "{status} {body}");
    let (status, body) = curl_status(&["-H", &bearer, &format!("{base}/v1/users/{id}")]);
    assert_eq!(status, 404, "{body}");
    drop(user);
    let _ = std::fs::remove_dir_all(&dir);
}

fn token(secret: &[u8], claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("a token")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_applies_the_auth_rules_from_its_flags() {
    let dir = registry_dir("auth");
    let (_service, _server) = greeter("greeter", &dir).await;
    let secret = b"a gateway secret of at least 32 bytes";
    let secret_file = dir.join("hs256.secret");
    // A trailing newline, as `echo` writes it, is not part of the secret.
    std::fs::write(&secret_file, [&secret[..], b"\n"].concat()).expect("writes the secret");
    let secret_path = secret_file.to_string_lossy().into_owned();
    let (_gateway, address) = gateway(
        &dir,
        &[
            "--auth-hs256-secret-file",
            &secret_path,
            "--auth-audience",
            "greeter",
            "--auth-rule",
            "greeter.Greeter.SayHelloStream=public",
            "--auth-rule",
            "greeter.Greeter.SayHello=greet|admin",
            "--auth-rule",
            "greeter.*=authenticated",
        ],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let good = token(
        secret,
        serde_json::json!({"sub": "ann", "scope": "greet", "aud": "greeter", "exp": now + 600}),
    );
    let reader = token(
        secret,
        serde_json::json!({"sub": "bo", "scope": "read", "aud": "greeter", "exp": now + 600}),
    );
    let expired = token(
        secret,
        serde_json::json!({"sub": "cy", "scope": "greet", "aud": "greeter", "exp": now - 600}),
    );
    let elsewhere = token(
        secret,
        serde_json::json!({"sub": "di", "scope": "greet", "aud": "billing", "exp": now + 600}),
    );
    let forged = token(
        b"not the gateway's secret, 32 bytes+",
        serde_json::json!({"sub": "ev", "scope": "greet", "aud": "greeter", "exp": now + 600}),
    );
    let base = format!("http://{address}");
    blocking(move || {
        let say = |bearer: Option<&str>| {
            let mut args = vec![
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"name":"x"}"#,
            ];
            let header;
            if let Some(t) = bearer {
                header = format!("authorization: Bearer {t}");
                args.extend(["-H", header.as_str()]);
            }
            curl(&args, &format!("{base}/greeter/say-hello"))
        };
        let ok = say(Some(&good));
        assert_eq!(ok.status, 200, "{ok:?}");
        assert_eq!(ok.json()["message"], "Hello x");
        expect_error(&say(None), 401, "greeter.Greeter.SayHello: no bearer token");
        expect_error(
            &say(Some(&reader)),
            403,
            "needs scope greet or admin; the token grants read",
        );
        expect_error(&say(Some(&expired)), 401, "the token has expired");
        expect_error(&say(Some(&elsewhere)), 401, "not meant for this audience");
        expect_error(&say(Some(&forged)), 401, "signature does not verify");
        for reply in [say(Some(&reader)), say(Some(&forged))] {
            assert!(
                !reply.body.contains(&forged) && !reply.body.contains(&reader),
                "a token is echoed: {reply:?}"
            );
        }
        // A public endpoint needs no token (a server stream, as NDJSON).
        let stream = post(
            &format!("{base}/greeter/say-hello-stream"),
            r#"{"name":"p","count":2}"#,
        );
        assert_eq!(stream.status, 200, "{stream:?}");
        assert!(stream.body.contains("Hello p #2"), "{stream:?}");
        // The gRPC path route is checked against the same rules.
        let grpc_path = format!("{base}/greeter.v1.Greeter/SayHello");
        let refused = curl(
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"name":"x"}"#,
            ],
            &grpc_path,
        );
        expect_error(&refused, 401, "no bearer token");
    })
    .await;
    // A key file that cannot be read stops the gateway with a sentence.
    let out = gateway_command(&dir)
        .args(["--auth-hs256-secret-file", "/nonexistent/secret"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read `/nonexistent/secret`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads `stream` until the server closes it, within `limit`: whether it did, and
/// how many bytes came first.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> (bool, usize) {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let mut got = 0;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        match stream.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, got),
        }
    }
    (false, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_closes_slowloris_and_excess_connections() {
    let dir = registry_dir("hardening");
    let (_service, _server) = greeter("greeter", &dir).await;
    let (_gateway, address) = gateway(
        &dir,
        &[
            "--server-handshake-timeout",
            "1s",
            "--server-max-connections",
            "30",
        ],
    );
    let url = format!("http://{address}/greeter/say-hello");
    blocking(move || {
        use std::io::Write;
        // 15 connections that send nothing and 10 that never finish their headers.
        let mut hostile = Vec::new();
        for i in 0..25 {
            let mut stream = std::net::TcpStream::connect(&address).expect("connects");
            if i >= 15 {
                stream
                    .write_all(b"POST /greeter/say-hello HTTP/1.1\r\nHost: x\r\n")
                    .expect("writes");
            }
            hostile.push(stream);
        }
        // Meanwhile a well-behaved client is answered.
        let reply = post(&url, r#"{"name":"bystander"}"#);
        assert_eq!(reply.status, 200, "{reply:?}");
        let started = Instant::now();
        for stream in &mut hostile {
            let (closed, _) = closed_within(stream, Duration::from_secs(10));
            assert!(closed, "a slowloris connection stayed open");
        }
        println!(
            "25 slowloris connections to the gateway closed within {:?}",
            started.elapsed()
        );
        // 30 HTTP/2 connections held open fill the limit: the 31st is closed at once.
        let open = || {
            let mut stream = std::net::TcpStream::connect(&address).expect("connects");
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                .expect("writes");
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            stream
        };
        let mut held: Vec<_> = (0..30).map(|_| open()).collect();
        wait_until(
            "the 30 connections are served",
            Duration::from_secs(10),
            || {
                // Each is answered with the server's SETTINGS once it is served. A
                // slowloris's slot comes back when its task ends, an instant after
                // its socket closed: a connection refused in that instant (closed
                // with nothing sent) is opened again, until all 30 are served.
                let mut served = 0;
                for stream in &mut held {
                    let mut buf = [0u8; 9];
                    match stream.peek(&mut buf) {
                        Ok(0) => *stream = open(),
                        Ok(_) => served += 1,
                        Err(_) => {}
                    }
                }
                served == held.len()
            },
        );
        let mut extra = std::net::TcpStream::connect(&address).expect("the kernel accepts");
        let (closed, bytes) = closed_within(&mut extra, Duration::from_secs(5));
        assert!(closed && bytes == 0, "the 31st connection was served");
        drop(held);
        wait_until("a request is served again", Duration::from_secs(10), || {
            post(&url, r#"{"name":"again"}"#).status == 200
        });
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--server-idle-timeout` on the gateway: an HTTP/2 connection with no request
/// open or started for that long is told to go away and closed; one that keeps
/// asking is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_closes_idle_connections() {
    let dir = registry_dir("idle");
    let (_service, _server) = greeter("greeter", &dir).await;
    let (_gateway, address) = gateway(&dir, &["--server-idle-timeout", "1s"]);
    blocking(move || {
        use std::io::Write;
        let mut idle = std::net::TcpStream::connect(&address).expect("connects");
        idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .expect("writes");
        // Meanwhile requests every 300 ms on one HTTP/1.1 connection keep it open.
        let started = Instant::now();
        let busy = std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(&address).expect("connects");
            let mut answered = 0;
            while started.elapsed() < Duration::from_millis(2500) {
                let status = keep_alive_post(&mut stream, r#"{"name":"busy"}"#);
                assert_eq!(status, Some(200), "after {answered} answers");
                answered += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            answered
        });
        let (closed, _) = closed_within(&mut idle, Duration::from_secs(15));
        assert!(closed, "an idle HTTP/2 connection stayed open");
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "closed before it was idle for the timeout: {:?}",
            started.elapsed()
        );
        println!("an idle connection closed after {:?}", started.elapsed());
        assert!(busy.join().expect("the busy client") >= 5);
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Posts `json` to the greeter's SayHello route on an HTTP/1.1 connection kept
/// alive: the reply's status, or `None` if the connection closed first.
fn keep_alive_post(stream: &mut std::net::TcpStream, json: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let request = format!(
        "POST /greeter/say-hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())?;
        if body.len() >= length {
            return head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        }
    }
}

/// `--tls-client-ca-file`: a client certificate of that CA is let in, a client
/// with none (or one of another CA) is refused in the handshake; with
/// `--tls-client-auth optional` a client without one is served too.
#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_verified_with_tls_client_ca_file() {
    use rmicro::testing::TestCa;
    let dir = registry_dir("mtls");
    let (_service, _server) = greeter("greeter", &dir).await;
    let ca = TestCa::new("gateway client CA");
    let server = ca.server();
    let client = ca.client("curl", &[]);
    let stranger = TestCa::new("another CA").client("stranger", &[]);
    for (mode, anonymous_served) in [("required", false), ("optional", true)] {
        let (_gateway, address) = gateway(
            &dir,
            &[
                "--tls-cert-file",
                server.cert_file.to_str().expect("utf-8 path"),
                "--tls-key-file",
                server.key_file.to_str().expect("utf-8 path"),
                "--tls-client-ca-file",
                ca.cert_file().to_str().expect("utf-8 path"),
                "--tls-client-auth",
                mode,
            ],
        );
        let port = address.rsplit(':').next().expect("a port").to_owned();
        let url = format!("https://localhost:{port}/greeter/say-hello");
        let resolve = format!("localhost:{port}:127.0.0.1");
        let ca_file = ca.cert_file().to_string_lossy().into_owned();
        let (client, stranger) = (client.clone(), stranger.clone());
        blocking(move || {
            let with = |cert: Option<&rmicro::testing::TestCert>| {
                let mut command = Command::new("curl");
                command
                    .args(["-s", "--max-time", "10", "--cacert", &ca_file])
                    .args(["--resolve", &resolve])
                    .args(["-H", "content-type: application/json"])
                    .args(["-d", r#"{"name":"mtls"}"#]);
                if let Some(cert) = cert {
                    command
                        .arg("--cert")
                        .arg(&cert.cert_file)
                        .arg("--key")
                        .arg(&cert.key_file);
                }
                command.arg(&url).output().expect("curl runs")
            };
            let known = with(Some(&client));
            let text = String::from_utf8_lossy(&known.stdout);
            assert!(
                known.status.success() && text.contains(r#""message":"Hello mtls""#),
                "{mode}: {text} {}",
                String::from_utf8_lossy(&known.stderr)
            );
            let other = with(Some(&stranger));
            assert!(
                !other.status.success(),
                "{mode}: a certificate of another CA was let in: {}",
                String::from_utf8_lossy(&other.stdout)
            );
            let anonymous = with(None);
            assert_eq!(
                anonymous.status.success()
                    && String::from_utf8_lossy(&anonymous.stdout).contains("Hello mtls"),
                anonymous_served,
                "{mode}: a client without a certificate: {}",
                String::from_utf8_lossy(&anonymous.stdout)
            );
        })
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
