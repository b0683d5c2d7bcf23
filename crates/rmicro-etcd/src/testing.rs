//! Test support: a real single-node etcd on free loopback ports, in its own data
//! directory, stopped and removed when dropped. Used by this crate's tests and by
//! other rmicro crates' tests that need etcd.

use crate::EtcdClient;
use rmicro::testing::{ServerProcess, find_binary, in_ci};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `etcd` binary: `$RMICRO_ETCD`, or `etcd` on `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    find_binary("etcd", "RMICRO_ETCD")
}

/// An etcd server started for a test.
pub struct EtcdServer {
    process: ServerProcess,
}

impl EtcdServer {
    /// Starts etcd (from [`etcd_binary`]) and waits until it answers; `Ok(None)` when
    /// no etcd is installed.
    pub async fn start() -> std::io::Result<Option<EtcdServer>> {
        let Some(binary) = etcd_binary() else {
            return Ok(None);
        };
        let process = ServerProcess::new("etcd", binary, 2, |dir, ports| {
            let client = format!("http://127.0.0.1:{}", ports[0]);
            let peer = format!("http://127.0.0.1:{}", ports[1]);
            let mut args: Vec<std::ffi::OsString> = Vec::new();
            for (flag, value) in [
                ("--name", "rmicro-test".to_owned()),
                ("--listen-client-urls", client.clone()),
                ("--advertise-client-urls", client),
                ("--listen-peer-urls", peer.clone()),
                ("--initial-advertise-peer-urls", peer.clone()),
                ("--initial-cluster", format!("rmicro-test={peer}")),
            ] {
                args.push(flag.into());
                args.push(value.into());
            }
            args.push("--data-dir".into());
            args.push(dir.join("data").into());
            args
        })?;
        let mut server = EtcdServer { process };
        server.resume().await?;
        Ok(Some(server))
    }

    /// Starts etcd, or — when it is not installed — fails under `CI=true` and
    /// otherwise prints that `test` is skipped and returns `None`.
    pub async fn start_or_skip(test: &str) -> Option<EtcdServer> {
        match EtcdServer::start().await {
            Ok(Some(server)) => Some(server),
            Ok(None) => {
                assert!(
                    !in_ci(),
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
        format!("127.0.0.1:{}", self.process.ports()[0])
    }

    /// The server's data directory (its log is `etcd.log` in it).
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// Kills the server (as a crash would); its data stays for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same ports and data, and waits until it answers.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        let probe = EtcdClient::new(&self.address())
            .map_err(std::io::Error::other)?
            .with_timeout(Duration::from_millis(500));
        self.process
            .start(|| {
                let probe = probe.clone();
                async move { probe.get("/rmicro-test-probe").await.is_ok() }
            })
            .await
    }
}
