//! Test support: the NATS server every machine of this project runs on
//! 127.0.0.1:4222 (JetStream on), reached or reported.

use crate::NatsBroker;
use rmicro::broker::Broker;

/// The machine's NATS (`nats://127.0.0.1:4222`).
pub const SHARED_ADDRESS: &str = "nats://127.0.0.1:4222";

/// A JetStream broker on the machine's NATS, or — when it is not reachable — a
/// failure under `CI=true`, otherwise a printed skip of `test` and `None`.
pub async fn shared_or_skip(test: &str) -> Option<NatsBroker> {
    let broker = NatsBroker::jetstream(SHARED_ADDRESS);
    match broker.connect().await {
        Ok(()) => Some(broker),
        Err(err) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "NATS is not reachable at {SHARED_ADDRESS} and CI=true: {err}"
            );
            eprintln!("SKIPPED {test}: NATS is not reachable at {SHARED_ADDRESS} ({err})");
            None
        }
    }
}

/// A private `nats-server` with JetStream on a free loopback port and its own store
/// directory, for tests that restart the server. Stopped and removed when dropped.
pub struct NatsServer {
    binary: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
    child: Option<std::process::Child>,
}

/// The `nats-server` binary: `$RMICRO_NATS_SERVER`, on `PATH`, or `/usr/sbin`.
pub fn nats_server_binary() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("RMICRO_NATS_SERVER") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients; `Ok(None)` when
    /// `nats-server` is not installed.
    pub async fn start() -> std::io::Result<Option<NatsServer>> {
        let Some(binary) = nats_server_binary() else {
            return Ok(None);
        };
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rmicro-nats-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server = NatsServer {
            binary,
            dir,
            port,
            child: None,
        };
        server.resume().await?;
        Ok(Some(server))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); its JetStream store stays for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store; waits until it accepts.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))?;
        let child = std::process::Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "nats-server did not listen within 20 s; see {}",
                    self.dir.join("nats.log").display()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
