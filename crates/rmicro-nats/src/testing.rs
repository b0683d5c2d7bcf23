//! Test support: the NATS server every machine of this project runs on
//! 127.0.0.1:4222 (JetStream on), reached or reported.

use crate::NatsBroker;

/// The machine's NATS (`nats://127.0.0.1:4222`).
pub const SHARED_ADDRESS: &str = "nats://127.0.0.1:4222";

/// A JetStream broker on the machine's NATS, or — when it is not reachable — a
/// failure under `CI=true`, otherwise a printed skip of `test` and `None`.
pub async fn shared_or_skip(test: &str) -> Option<NatsBroker> {
    rmicro::broker::testing::reachable_or_skip(NatsBroker::jetstream(SHARED_ADDRESS), test).await
}

/// A private `nats-server` with JetStream on a free loopback port and its own store
/// directory, for tests that restart the server. Stopped and removed when dropped.
pub struct NatsServer {
    process: rmicro::testing::ServerProcess,
}

/// The `nats-server` binary: `$RMICRO_NATS_SERVER`, on `PATH`, or `/usr/sbin`.
pub fn nats_server_binary() -> Option<std::path::PathBuf> {
    rmicro::testing::find_binary("nats-server", "RMICRO_NATS_SERVER")
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients; `Ok(None)` when
    /// `nats-server` is not installed.
    pub async fn start() -> std::io::Result<Option<NatsServer>> {
        let Some(binary) = nats_server_binary() else {
            return Ok(None);
        };
        let process = rmicro::testing::ServerProcess::new("nats", binary, 1, |dir, ports| {
            let port = ports[0].to_string();
            let mut args: Vec<std::ffi::OsString> = ["-a", "127.0.0.1", "-p", &port, "-js", "-sd"]
                .into_iter()
                .map(Into::into)
                .collect();
            args.push(dir.join("store").into());
            args
        })?;
        let mut server = NatsServer { process };
        server.resume().await?;
        Ok(Some(server))
    }

    /// Starts a server from a configuration file: `config(dir, port)` returns its
    /// text (the `listen` line is added). For servers with TLS or accounts;
    /// `Ok(None)` when `nats-server` is not installed.
    pub async fn with_config(
        config: impl FnOnce(&std::path::Path, u16) -> String,
    ) -> std::io::Result<Option<NatsServer>> {
        let Some(binary) = nats_server_binary() else {
            return Ok(None);
        };
        let process = rmicro::testing::ServerProcess::with_config_file(
            "nats",
            binary,
            1,
            "nats.conf",
            |dir, ports| format!("listen: 127.0.0.1:{}\n{}", ports[0], config(dir, ports[0])),
            |path| vec!["-c".into(), path.into()],
        )?;
        let mut server = NatsServer { process };
        server.resume().await?;
        Ok(Some(server))
    }

    /// The server's data directory (its configuration and log are there).
    pub fn dir(&self) -> &std::path::Path {
        self.process.dir()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("nats://127.0.0.1:{}", self.process.ports()[0])
    }

    /// Kills the server (SIGKILL); its JetStream store stays for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same port and store; waits until it accepts.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.process.start_listening().await
    }
}
