//! `--log-format ecs` on the shipped greeter: every line on stderr is one Elastic
//! Common Schema object, the start-up line names the address, and a request log
//! carries the call's endpoint, status, duration and error.

mod common;

use common::ChildGuard;
use greeter::proto::{GreeterClient, HelloRequest};
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The next line `pick` accepts, every line seen checked to be ECS JSON.
fn next(
    lines: &mpsc::Receiver<String>,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the greeter logs the expected line within 30 s");
        let parsed: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        for field in [
            "@timestamp",
            "log.level",
            "message",
            "ecs.version",
            "log.logger",
        ] {
            assert!(parsed.get(field).is_some(), "no {field}: {line}");
        }
        assert_eq!(parsed["service.name"], "greeter", "{line}");
        assert_eq!(parsed["service.version"], "1.0.0", "{line}");
        assert!(
            parsed["service.node.name"]
                .as_str()
                .is_some_and(|n| n.starts_with("greeter-")),
            "{line}"
        );
        if pick(&parsed) {
            return parsed;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_greeter_writes_ecs_lines() {
    let (dir, _registry, flags) = common::local_cluster("logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_greeter"))
        .args(["--server-address", "127.0.0.1:0"])
        .args(["--log-format", "ecs", "--log-level", "debug"])
        .args(&flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("greeter starts");
    let stderr = child.stderr.take().expect("piped");
    let _greeter = ChildGuard(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = next(&lines, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("Listening on"))
    });
    let message = started["message"].as_str().unwrap_or_default();
    let address = message
        .split_once("Listening on ")
        .map(|(_, rest)| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .expect("the address");

    let greeter = GreeterClient::new(
        "greeter",
        rmicro::Client::default().with_route("greeter", address),
    );
    let hello = |name: &str| HelloRequest {
        name: name.into(),
        count: 0,
    };
    greeter.say_hello(hello("ann")).await.expect("answers");
    let ok = next(&lines, |l| l["message"] == "call ok");
    assert_eq!(ok["log.level"], "debug");
    assert_eq!(ok["micro.endpoint"], "greeter.Greeter.SayHello");
    assert_eq!(ok["micro.status"], "Ok");
    assert!(ok["event.duration"].as_u64().is_some(), "{ok}");

    assert_eq!(greeter.say_hello(hello("")).await.unwrap_err().code, 400);
    let failed = next(&lines, |l| l["message"] == "call failed");
    assert_eq!(failed["log.level"], "warn");
    assert_eq!(failed["micro.status"], "InvalidArgument");
    assert!(
        failed["error.message"]
            .as_str()
            .is_some_and(|e| e.contains("name")),
        "{failed}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_gets_every_line_up_to_shutdown() {
    let (dir, _registry, flags) = common::local_cluster("log-file");
    let log = dir.join("logs").join("greeter.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_greeter"))
        .args(["--server-address", "127.0.0.1:0"])
        .args(["--log-format", "ecs", "--log-level", "debug"])
        .arg("--log-file")
        .arg(&log)
        .args(["--log-max-size", "1", "--log-compress"])
        .args(&flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("greeter starts");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    // The start-up line reaches the file (the writer flushes once its queue is empty).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let address = loop {
        let text = read(&log);
        let found = text.lines().find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            let message = event["message"].as_str()?;
            let rest = message.split_once("Listening on ")?.1;
            Some(rest.split_whitespace().next()?.to_owned())
        });
        if let Some(address) = found {
            break address;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no start-up line in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let greeter = GreeterClient::new(
        "greeter",
        rmicro::Client::default().with_route("greeter", address),
    );
    greeter
        .say_hello(HelloRequest {
            name: "ann".into(),
            count: 0,
        })
        .await
        .expect("answers");
    // SIGTERM: the service drains, logs that it stopped, and flushes the file.
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait task")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    let text = read(&log);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.iter().any(|e| e["message"] == "call ok"), "{text}");
    assert_eq!(
        events.last().map(|e| e["message"].clone()),
        Some("stopped".into()),
        "the last line, written at shutdown, is in the file: {text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
