//! Test support: a real single-node etcd on free loopback ports, in its own data
//! directory, stopped and removed when dropped. Used by this crate's tests and by
//! other rmicro crates' tests that need etcd.

use crate::EtcdClient;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `etcd` binary: `$RMICRO_ETCD`, or `etcd` on `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RMICRO_ETCD") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    })
}

/// An etcd server started for a test.
pub struct EtcdServer {
    binary: PathBuf,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts etcd (from [`etcd_binary`]) and waits until it answers; `Ok(None)` when
    /// no etcd is installed.
    pub async fn start() -> std::io::Result<Option<EtcdServer>> {
        let Some(binary) = etcd_binary() else {
            return Ok(None);
        };
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rmicro-etcd-{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let mut server = EtcdServer {
            binary,
            dir,
            client_port: free_port()?,
            peer_port: free_port()?,
            child: None,
        };
        server.resume().await?;
        Ok(Some(server))
    }

    /// Starts etcd, or — when it is not installed — fails under `CI=true` and
    /// otherwise prints that `test` is skipped and returns `None`.
    pub async fn start_or_skip(test: &str) -> Option<EtcdServer> {
        match EtcdServer::start().await {
            Ok(Some(server)) => Some(server),
            Ok(None) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(
                    !ci,
                    "etcd is not installed and CI=true: run scripts/test (apt-get install -y etcd-server)"
                );
                eprintln!("SKIPPED {test}: etcd is not installed (apt-get install -y etcd-server)");
                None
            }
            Err(err) => panic!("cannot start etcd for {test}: {err}"),
        }
    }

    /// `127.0.0.1:<port>` for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The server's data directory (its log is `etcd.log` beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (as a crash would); its data stays for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data, and waits until it answers.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))?;
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .args(["--name", "rmicro-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("rmicro-test={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let probe = EtcdClient::new(&self.address())
            .map_err(std::io::Error::other)?
            .with_timeout(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if probe.get("/rmicro-test-probe").await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(std::io::Error::other(format!(
                    "etcd exited with {status}; see {}",
                    self.dir.join("etcd.log").display()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd did not answer within 30 s; see {}",
                    self.dir.join("etcd.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
