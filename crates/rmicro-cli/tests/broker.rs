//! `rmicro publish` and `rmicro subscribe` against the machine's NATS (JetStream),
//! including a subscriber process killed with SIGKILL mid-stream.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const ADDRESS: &str = rmicro::nats::testing::SHARED_ADDRESS;

fn rmicro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(args)
        .env_remove("MICRO_BROKER")
        .env_remove("MICRO_BROKER_ADDRESS")
        .output()
        .expect("rmicro runs")
}

/// A `rmicro subscribe` process, the lines it prints, and what it says on stderr.
struct Subscriber {
    child: Child,
    lines: Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Subscriber {
    fn start(topic: &str, broker: &str, address: &str) -> Subscriber {
        Self::with_args(&[
            "subscribe",
            topic,
            "--queue",
            "workers",
            "--broker",
            broker,
            "--broker-address",
            address,
        ])
    }

    fn with_args(args: &[&str]) -> Subscriber {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmicro"))
            .args(args)
            .env_remove("MICRO_BROKER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("subscriber starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut errors, sink) = (child.stderr.take().expect("stderr"), stderr.clone());
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut errors, &mut text);
            {
                let mut sink = rmicro::sync::lock(&sink);
                *sink = text;
            }
        });
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Subscriber {
            child,
            lines,
            stderr,
        }
    }

    /// Whether the process still runs, and what it wrote to stderr (once it ended).
    fn state(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            Ok(None) => "still running".to_owned(),
            Err(err) => format!("cannot tell: {err}"),
        };
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!("subscriber {status}; stderr: {stderr}")
    }

    /// The `n` fields of every line received so far.
    fn drain(&self, into: &mut Vec<u64>) {
        while let Ok(line) = self.lines.try_recv() {
            let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            into.push(json["n"].as_u64().expect("n"));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `rmicro subscribe` process of queue group `workers` is killed with SIGKILL
/// while 600 messages are being published; a second member started after it must
/// see every message the first did not acknowledge. Returns (total, first, second).
async fn kill_mid_stream(broker_name: &str, address: &str, topic: &str) -> (u64, usize, usize) {
    let broker = rmicro::broker::from_flags(broker_name, Some(address)).expect("broker");
    let mut first = Subscriber::start(topic, broker_name, address);
    // Probe until the group exists and delivers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_first = Vec::new();
    let mut n = 0u64;
    while seen_first.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the subscriber never received anything ({})",
            first.state()
        );
        let out = rmicro(&[
            "publish",
            topic,
            &format!(r#"{{"n": {n}}}"#),
            "--broker",
            broker_name,
            "--broker-address",
            address,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.drain(&mut seen_first);
    }
    let publisher = {
        let (broker, topic) = (broker.clone(), topic.to_owned());
        tokio::spawn(async move {
            for i in n..n + 600 {
                let body =
                    rmicro::broker::typed::encode_json(&serde_json::json!({"n": i})).unwrap();
                broker
                    .publish(&topic, body)
                    .await
                    .expect("confirmed publish");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = first.child.kill();
    let _ = first.child.wait();
    first.drain(&mut seen_first);
    let second = Subscriber::start(topic, broker_name, address);
    publisher.await.unwrap();
    let total = n + 600;
    // Every confirmed message published while the group existed is delivered at
    // least once (probes published before the group existed may not be).
    let expected: BTreeSet<u64> = (n..total).collect();
    let mut seen_second = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        second.drain(&mut seen_second);
        let all: BTreeSet<u64> = seen_first.iter().chain(&seen_second).copied().collect();
        let missing = expected.difference(&all).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{broker_name}: {missing} of {} messages never delivered (first {}, second {})",
            expected.len(),
            seen_first.len(),
            seen_second.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{broker_name} kill -9 mid-stream: {total} published, first took {}, second {}, all delivered",
        seen_first.len(),
        seen_second.len()
    );
    (total, seen_first.len(), seen_second.len())
}

fn topic(name: &str) -> String {
    format!("rmicro-test.{}.{name}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_subscriber_killed_mid_stream_loses_nothing() {
    let Some(nats) = rmicro::nats::testing::shared_or_skip("nats kill -9").await else {
        return;
    };
    let t = topic("nats");
    kill_mid_stream("nats", &format!("{ADDRESS}?ack_wait=1s"), &t).await;
    nats.delete_topic(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_subscriber_killed_mid_stream_loses_nothing() {
    let Some(redis) = rmicro::redis::testing::shared_or_skip("redis kill -9", "1s").await else {
        return;
    };
    let t = topic("redis");
    let address = format!("{}?ack_wait=1s", rmicro::redis::testing::SHARED_ADDRESS);
    kill_mid_stream("redis", &address, &t).await;
    redis.delete_topic(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_subscriber_killed_mid_stream_loses_nothing() {
    let Some(rabbit) = rmicro::rabbitmq::testing::shared_or_skip("rabbitmq kill -9").await else {
        return;
    };
    let t = topic("rabbitmq");
    kill_mid_stream("rabbitmq", rmicro::rabbitmq::testing::SHARED_ADDRESS, &t).await;
    rabbit.delete_queue(&t, "workers").await.unwrap();
}

#[test]
fn bad_input_gets_a_sentence_and_exit_1() {
    let out = rmicro(&["publish", "t", "{not json", "--broker", "memory"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not JSON"));
    let out = rmicro(&["publish", "t", "{}", "--broker", "kafka"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown broker `kafka`"));
    // The default, embedded broker: with nobody subscribed the message goes nowhere.
    let dir = std::env::temp_dir().join(format!("rmicro-cli-broker-{}", std::process::id()));
    let out = rmicro(&[
        "publish",
        "t",
        "{}",
        "--registry-address",
        &dir.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
    let out = rmicro(&[
        "publish",
        "t",
        "{}",
        "--broker",
        "nats",
        "--broker-address",
        "nats://127.0.0.1:4222?speed=fast",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option `speed=fast`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_subscriber_killed_mid_stream_loses_nothing() {
    let Some(_mqtt) = rmicro::mqtt::testing::shared_or_skip("mqtt kill -9").await else {
        return;
    };
    let t = topic("mqtt").replace('.', "/");
    // The second member reconnects as the first (same client id): its persistent
    // session gets what the first never acknowledged.
    let address = format!(
        "{}?client_id=rmicro-test-{}",
        rmicro::mqtt::testing::SHARED_ADDRESS,
        std::process::id()
    );
    kill_mid_stream("mqtt", &address, &t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_broker_delivers_between_processes_with_no_server() {
    let dir = std::env::temp_dir().join(format!("rmicro-http-broker-{}", std::process::id()));
    let registry = dir.display().to_string();
    let subscriber = Subscriber::with_args(&[
        "subscribe",
        "user.created",
        "--registry",
        "local",
        "--registry-address",
        &registry,
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let out = rmicro(&[
            "publish",
            "user.created",
            r#"{"id": 7}"#,
            "--registry",
            "local",
            "--registry-address",
            &registry,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(line) = subscriber.lines.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber process never got a message"
        );
    };
    assert_eq!(line, r#"{"id":7}"#);
    drop(subscriber);
    let _ = std::fs::remove_dir_all(dir);
}
