//! Interop with gRPC stacks that are not ours: Python `grpcio` as client and server,
//! `curl` speaking the JSON codec over HTTP/2, and the real `greeter` binary's
//! signals and exit code.

mod common;

use common::{client_for, curl, python, read_until, repo_root, start_greeter, wait_until};
use greeter::proto::{GreeterClient, HelloRequest};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ChildGuard as Child;

#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_calls_the_rust_greeter() {
    let Some(python) = python() else { return };
    let (_service, server) = start_greeter().await;
    let address = server.local_addr().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(repo_root().join("interop/greeter_client.py"))
            .arg(address)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("all interop checks passed"),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The checks leave nothing running on the server.
    wait_until("no call is in flight", Duration::from_secs(5), || {
        server.in_flight() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_typed_client_calls_a_python_grpcio_server() {
    let Some(python) = python() else { return };
    let mut child = Child(
        Command::new(python)
            .arg(repo_root().join("interop/greeter_server.py"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python server starts"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let port: u16 = read_until(stdout, Duration::from_secs(30), |line| {
        line.strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
    });
    let client = GreeterClient::new(
        "py-greeter",
        rmicro::Client::default().with_route("py-greeter", format!("127.0.0.1:{port}")),
    );
    let req = |name: &str, count| HelloRequest {
        name: name.into(),
        count,
    };

    assert_eq!(
        client.say_hello(req("rust", 0)).await.unwrap().message,
        "Hello rust"
    );
    let mut stream = client.say_hello_stream(req("rust", 3)).await.unwrap();
    let mut got = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        got.push(r.message);
    }
    assert_eq!(got, ["Hello rust #1", "Hello rust #2", "Hello rust #3"]);
    let names = futures_util::stream::iter(["a", "b", "c"].map(|n| req(n, 0)));
    assert_eq!(
        client.collect(names).await.unwrap().message,
        "Hello a, b, c"
    );
    let mut chat = client
        .chat(futures_util::stream::iter(["p", "q"].map(|n| req(n, 0))))
        .await
        .unwrap();
    assert_eq!(chat.message().await.unwrap().unwrap().message, "Hello p");
    assert_eq!(chat.message().await.unwrap().unwrap().message, "Hello q");
    assert!(chat.message().await.unwrap().is_none());
    // A foreign server's error becomes an Error with the gRPC code mapped.
    let err = client.say_hello(req("", 0)).await.unwrap_err();
    assert_eq!(
        (err.code, err.detail.as_str()),
        (400, "name must not be empty")
    );
}

fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// Runs curl with HTTP/2 prior knowledge; returns (headers and trailers, body).
fn curl_grpc(
    curl: &std::path::Path,
    url: &str,
    content_type: &str,
    body: &[u8],
) -> (String, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!(
        "rmicro-curl-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let request = dir.join("request.bin");
    std::fs::write(&request, body).unwrap();
    let output = Command::new(curl)
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "10",
            "-X",
            "POST",
        ])
        .args([
            "-H",
            &format!("content-type: {content_type}"),
            "-H",
            "te: trailers",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", request.display()))
        .arg("-D")
        .arg(dir.join("headers.txt"))
        .arg("-o")
        .arg(dir.join("body.bin"))
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let headers = std::fs::read_to_string(dir.join("headers.txt")).unwrap();
    let body = std::fs::read(dir.join("body.bin")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (headers.to_ascii_lowercase(), body)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_speaks_the_json_codec_over_http2() {
    let Some(curl) = curl() else { return };
    let (_service, server) = start_greeter().await;
    let url = format!("http://{}/greeter.v1.Greeter/SayHello", server.local_addr());

    let (headers, body) = curl_grpc(
        &curl,
        &url,
        "application/grpc+json",
        &grpc_frame(br#"{"name":"curl"}"#),
    );
    assert!(
        headers.contains("content-type: application/grpc+json"),
        "{headers}"
    );
    assert!(headers.contains("grpc-status: 0"), "{headers}");
    assert_eq!(
        &body[..5],
        &grpc_frame(&body[5..])[..5],
        "one framed message"
    );
    let reply: serde_json::Value = serde_json::from_slice(&body[5..]).unwrap();
    assert_eq!(reply, serde_json::json!({"message": "Hello curl"}));

    // Invalid JSON: INVALID_ARGUMENT, and the server keeps serving.
    let (headers, _) = curl_grpc(&curl, &url, "application/grpc+json", &grpc_frame(b"{nope"));
    assert!(headers.contains("grpc-status: 3"), "{headers}");
    // Garbage protobuf: INVALID_ARGUMENT or INTERNAL.
    let (headers, _) = curl_grpc(
        &curl,
        &url,
        "application/grpc",
        &grpc_frame(b"\xff\xff\xff\xff"),
    );
    assert!(
        headers.contains("grpc-status: 13") || headers.contains("grpc-status: 3"),
        "{headers}"
    );
    let reply = client_for(&server)
        .say_hello(HelloRequest {
            name: "still here".into(),
            count: 0,
        })
        .await
        .unwrap();
    assert_eq!(reply.message, "Hello still here");
}

#[test]
fn the_greeter_binary_shuts_down_gracefully_on_sigterm() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_greeter"))
            .args([
                "--server-address",
                "127.0.0.1:0",
                "--server-grace-period",
                "5s",
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("greeter starts"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let address: String = common::listening_address(stderr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = GreeterClient::new(
            "greeter",
            rmicro::Client::default().with_route("greeter", address.clone()),
        );
        // A long stream in flight when SIGTERM arrives still completes.
        let mut stream = client
            .say_hello_stream(HelloRequest {
                name: "sig".into(),
                count: 200,
            })
            .await
            .unwrap();
        assert!(stream.message().await.unwrap().is_some());
        let pid = child.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut n = 1;
        while stream.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 200, "the in-flight stream was cut short");
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "greeter did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_greeter_binary_lists_its_flags_and_rejects_bad_ones() {
    let help = Command::new(env!("CARGO_BIN_EXE_greeter"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--server-name",
        "--server-address",
        "--server-advertise",
        "--client-request-timeout",
        "--client-retries",
        "--log-level",
        "MICRO_SERVER_ADDRESS",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_greeter"))
        .args(["--client-request-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a duration"));
}
