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
