//! Secrets stay secret: a full run of the shipped binaries with credentials
//! configured — the greeter on NATS with a user and password in its broker URL,
//! the gateway verifying tokens with an HS256 secret from a file, calls with
//! bearer tokens, good and bad, published events — and then every byte they
//! printed (at debug level), every registry record, every metric and every CLI
//! answer is searched for the password, the secret and the tokens.

mod common;

use common::{binary, fresh_dir};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const NATS_PASSWORD: &str = "Pw-nats-5c1e9d";
const HS256_SECRET: &str = "hs256-secret-a41f0b7e-of-at-least-32-bytes";

/// Waits until the file at `path` holds a line with `marker`; the text after it
/// up to the next space.
fn wait_for(path: &Path, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(rest) = text.split(marker).nth(1) {
            return rest
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "`{marker}` never appeared in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> Guard {
    let out = std::fs::File::create(log).expect("a log file");
    let err = out.try_clone().expect("the same file");
    Guard(
        Command::new(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the binary starts"),
    )
}

fn output(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", url])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(HS256_SECRET.as_bytes()),
    )
    .expect("a token")
}

#[test]
fn no_password_secret_or_token_in_anything_a_full_run_prints() {
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        assert!(
            !rmicro::testing::in_ci(),
            "NATS is not running on 127.0.0.1:4222"
        );
        eprintln!("skipped: NATS is not running on 127.0.0.1:4222");
        return;
    }
    let dir = fresh_dir("secrets", "full-run");
    let registry = dir.join("registry");
    let registry = registry.to_str().expect("UTF-8");
    let nats = format!("nats://rmicro:{NATS_PASSWORD}@127.0.0.1:4222");
    let secret_file = dir.join("hs256.secret");
    std::fs::write(&secret_file, HS256_SECRET).expect("writes");
    let rmicro = std::path::PathBuf::from(env!("CARGO_BIN_EXE_rmicro"));
    let common = ["--registry", "local", "--registry-address", registry];

    let greeter_log = dir.join("greeter.log");
    let mut args = vec![
        "--log-level",
        "debug",
        "--server-address",
        "127.0.0.1:0",
        "--broker",
        "nats",
        "--broker-address",
        &nats,
        "--metrics-address",
        "127.0.0.1:0",
    ];
    args.extend(common);
    let _greeter = spawn(&binary("greeter"), &args, &greeter_log);
    let greeter_metrics = wait_for(&greeter_log, "Prometheus metrics at http://");
    wait_for(&greeter_log, "Listening on ");

    let api_log = dir.join("api.log");
    let secret_path = secret_file.to_str().expect("UTF-8");
    let mut args = vec![
        "api",
        "--address",
        "127.0.0.1:0",
        "--log-level",
        "debug",
        "--access-log",
        "--auth-hs256-secret-file",
        secret_path,
        "--metrics-address",
        "127.0.0.1:0",
    ];
    args.extend(common);
    let _api = spawn(&rmicro, &args, &api_log);
    let api = wait_for(&api_log, "rmicro api listening on ");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let good = token(serde_json::json!({"sub": "ann", "exp": now + 600}));
    let expired = token(serde_json::json!({"sub": "bo", "exp": now - 600}));
    let mut seen = String::new();
    for bearer in [&good, &expired, &"not-a-jwt-but-a-secret-9f2c".to_owned()] {
        let out = Command::new("curl")
            .args(["-s", "-i", "--max-time", "10", "-X", "POST"])
            .args(["-H", "content-type: application/json", "-H"])
            .arg(format!("authorization: Bearer {bearer}"))
            .args(["-d", r#"{"name":"x"}"#])
            .arg(format!("http://{api}/greeter/say-hello"))
            .output()
            .expect("curl runs");
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(
        seen.contains("Hello x"),
        "the good token was not served: {seen}"
    );
    assert!(seen.contains("the token has expired"), "{seen}");
    // Straight to the greeter with the CLI, a token in the metadata, and an event
    // published on the same NATS with the password.
    let auth = format!("authorization=Bearer {good}");
    let mut args = vec![
        "call",
        "greeter",
        "Greeter.SayHello",
        r#"{"name":"cli"}"#,
        "--metadata",
        &auth,
    ];
    args.extend(common);
    seen.push_str(&output(&rmicro, &args));
    let mut args = vec![
        "publish",
        "greeter.events",
        r#"{"n":1}"#,
        "--broker",
        "nats",
        "--broker-address",
        &nats,
    ];
    args.extend(common);
    seen.push_str(&output(&rmicro, &args));
    // A broker URL that cannot work: its error must not repeat the password.
    let bad = format!("nats://rmicro:{NATS_PASSWORD}@127.0.0.1:1");
    let mut args = vec![
        "publish",
        "greeter.events",
        "{}",
        "--broker",
        "nats",
        "--broker-address",
        &bad,
    ];
    args.extend(common);
    seen.push_str(&output(&rmicro, &args));
    let mut args = vec!["services"];
    args.extend(common);
    seen.push_str(&output(&rmicro, &args));
    let mut args = vec!["describe", "greeter"];
    args.extend(common);
    let describe = output(&rmicro, &args);
    assert!(describe.contains("SayHello"), "{describe}");
    seen.push_str(&describe);
    seen.push_str(&get(&format!("http://{greeter_metrics}/metrics")));
    for file in std::fs::read_dir(registry).expect("the registry directory") {
        let path = file.expect("an entry").path();
        if path.is_file() {
            let mut text = String::new();
            let _ = std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut text));
            seen.push_str(&text);
        }
    }
    seen.push_str(&std::fs::read_to_string(&greeter_log).expect("the greeter's log"));
    seen.push_str(&std::fs::read_to_string(&api_log).expect("the gateway's log"));
    assert!(
        seen.contains("micro_request_total"),
        "the greeter's metrics were not read"
    );
    // The searched text does name the broker, the credentials in it hidden.
    assert!(
        seen.contains("rmicro:***@127.0.0.1:1"),
        "the failed publish does not name its broker"
    );
    assert!(
        seen.contains(" DEBUG "),
        "the binaries did not log at debug level"
    );
    assert!(seen.contains("greeter.Greeter.SayHello") || seen.contains("Greeter.SayHello"));

    for (what, secret) in [
        ("the NATS password", NATS_PASSWORD),
        ("the HS256 secret", HS256_SECRET),
        ("a bearer token", good.as_str()),
        ("an expired bearer token", expired.as_str()),
        ("a bearer value", "not-a-jwt-but-a-secret-9f2c"),
    ] {
        let hits: Vec<&str> = seen.lines().filter(|l| l.contains(secret)).collect();
        assert!(hits.is_empty(), "{what} was printed:\n{}", hits.join("\n"));
    }
    println!(
        "searched {} bytes of output, records and metrics: no secret",
        seen.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
