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
    /// The address (with TLS options) the readiness probe dials.
    probe: String,
}

/// The files of an etcd started with [`EtcdServer::start_tls`].
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA client certificates must chain to; `None` for no client certificates.
    pub client_ca: Option<PathBuf>,
}

impl EtcdServer {
    /// Starts etcd (from [`etcd_binary`]) and waits until it answers; `Ok(None)` when
    /// no etcd is installed.
    pub async fn start() -> std::io::Result<Option<EtcdServer>> {
        Self::launch(None, &[]).await
    }

    /// Starts etcd (plain HTTP) with extra command-line flags (`--auth-token-ttl`,
    /// …); `Ok(None)` when no etcd is installed.
    pub async fn start_with_flags(flags: &[&str]) -> std::io::Result<Option<EtcdServer>> {
        Self::launch(None, flags).await
    }

    /// Starts etcd serving clients over TLS only (`https://`), with the server
    /// certificate and key files of `tls` and, when it names a client CA, client
    /// certificates required (`--client-cert-auth`). `probe` is the address
    /// options (`?tls_ca=…&tls_cert=…&tls_key=…`) the readiness probe connects
    /// with; empty, it waits only until the port accepts TCP connections.
    /// `Ok(None)` when no etcd is installed.
    pub async fn start_tls(tls: EtcdTls, probe: &str) -> std::io::Result<Option<EtcdServer>> {
        Self::launch(Some((tls, probe.to_owned())), &[]).await
    }

    async fn launch(
        tls: Option<(EtcdTls, String)>,
        flags: &[&str],
    ) -> std::io::Result<Option<EtcdServer>> {
        let Some(binary) = etcd_binary() else {
            return Ok(None);
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let process = ServerProcess::new("etcd", binary, 2, |dir, ports| {
            let client = format!("{scheme}://127.0.0.1:{}", ports[0]);
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
            args.extend(flags.iter().map(std::ffi::OsString::from));
            if let Some((tls, _)) = &tls {
                args.extend(["--cert-file".into(), tls.cert.clone().into()]);
                args.extend(["--key-file".into(), tls.key.clone().into()]);
                if let Some(ca) = &tls.client_ca {
                    args.extend(["--trusted-ca-file".into(), ca.clone().into()]);
                    args.push("--client-cert-auth".into());
                }
            }
            args
        })?;
        let probe = match &tls {
            Some((_, options)) if options.is_empty() => String::new(),
            Some((_, options)) => format!("https://127.0.0.1:{}{options}", process.ports()[0]),
            None => format!("127.0.0.1:{}", process.ports()[0]),
        };
        let mut server = EtcdServer { process, probe };
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
        if self.probe.is_empty() {
            return self.process.start_listening().await;
        }
        let probe = EtcdClient::new(&self.probe)
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
