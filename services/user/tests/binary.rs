//! The `user` binary as shipped: it starts on SQLite with nothing configured,
//! `--health-check` asks it over gRPC health (the Dockerfile's HEALTHCHECK),
//! broken configuration stops it with a sentence, and SIGTERM stops it cleanly.

use rmicro::testing::listening_address;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn user() -> Command {
    Command::new(env!("CARGO_BIN_EXE_user"))
}

/// `user --health-check ARGS` (with `MICRO_SERVER_ADDRESS` when given): its exit
/// code, and what it printed on stdout and stderr.
fn probe(args: &[&str], env_address: Option<String>) -> (Option<i32>, String) {
    let mut command = user();
    command.arg("--health-check").args(args);
    if let Some(address) = env_address {
        command.env("MICRO_SERVER_ADDRESS", address);
    }
    let out = command.output().expect("the probe runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

#[test]
fn the_binary_serves_answers_its_health_check_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("rmicro-user-binary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    let registry = dir.join("registry");
    let mut child = Killed(
        user()
            .current_dir(&dir)
            .args(["--server-address", "127.0.0.1:0", "--registry", "local"])
            .arg("--registry-address")
            .arg(&registry)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    let address = listening_address(child.0.stderr.take().expect("stderr"));
    assert!(
        dir.join("user.db").is_file(),
        "users kept in SQLite by default"
    );

    let (code, stdout) = probe(&["--server-address", &address], None);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("SERVING"), "{stdout}");
    // What a container sees: the address from the environment, 0.0.0.0 meaning here.
    let port = address.rsplit(':').next().expect("a port");
    let (code, said) = probe(&[], Some(format!("0.0.0.0:{port}")));
    assert_eq!(code, Some(0), "{said}");

    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs")
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("waitable") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean shutdown exits 0: {status}");

    let (code, said) = probe(&["--server-address", &address], None);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("no health answer"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broken_configuration_stops_the_start_with_a_sentence() {
    let dir = std::env::temp_dir().join(format!("rmicro-user-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    for (set, says) in [
        ("mysql.driver=oracle", "`oracle` is not one of"),
        ("mysql.hots=db", "hots"),
        ("user.jwt_secret=short", "HS256 needs at least 32"),
        (
            "mysql.dsn=mysql://ann:hunter2@127.0.0.1:1/user",
            "database mysql://127.0.0.1:1/user unreachable",
        ),
    ] {
        let out = user()
            .current_dir(&dir)
            .args(["--server-address", "127.0.0.1:0", "--config-set", set])
            .args(["--database-wait", "1s"])
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{set}: {stderr}");
        assert!(stderr.contains(says), "{set}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{set}: {stderr}");
    }
    let portless = user()
        .arg("--health-check")
        .output()
        .expect("the probe runs");
    assert_eq!(portless.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&portless.stderr).contains("needs the node's port"));
    let _ = std::fs::remove_dir_all(&dir);
}
