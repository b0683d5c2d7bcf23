//! Test support: the Mosquitto every machine of this project runs on
//! 127.0.0.1:1883.

use super::MqttBroker;

/// The machine's Mosquitto.
pub const SHARED_ADDRESS: &str = super::DEFAULT_ADDRESS;

/// A private `mosquitto` on a free loopback port with persistence in its own
/// directory and no limit on queued messages, for tests that restart the
/// server. Stopped and removed when dropped.
pub struct MosquittoServer {
    process: rmicro::testing::ServerProcess,
}

impl MosquittoServer {
    /// Starts a server and waits until it accepts clients; `Ok(None)` when
    /// `mosquitto` is not installed.
    pub async fn start() -> std::io::Result<Option<MosquittoServer>> {
        Self::with_config(|dir, _| {
            format!(
                "allow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 100\n",
                dir.display()
            )
        })
        .await
    }

    /// Starts a server whose listener takes the settings `config(dir, port)` gives
    /// (TLS, a password file, …); `Ok(None)` when `mosquitto` is not installed.
    pub async fn with_config(
        config: impl FnOnce(&std::path::Path, u16) -> String,
    ) -> std::io::Result<Option<MosquittoServer>> {
        let Some(binary) = rmicro::testing::find_binary("mosquitto", "RMICRO_MOSQUITTO") else {
            return Ok(None);
        };
        // `user root`: started as root, mosquitto would otherwise switch to the
        // `mosquitto` user, which cannot write its database (or read the test's
        // files) in this directory, and lose every session on restart (without it
        // the log says "Error saving in-memory database … Permission denied").
        // Started as any other user it has no effect.
        let process = rmicro::testing::ServerProcess::with_config_file(
            "mosquitto",
            binary,
            1,
            "mosquitto.conf",
            |dir, ports| {
                format!(
                    "listener {} 127.0.0.1\nuser root\n{}",
                    ports[0],
                    config(dir, ports[0])
                )
            },
            |path| vec!["-c".into(), path.into()],
        )?;
        let mut server = MosquittoServer { process };
        server.resume().await?;
        Ok(Some(server))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// The server's directory (its configuration and log are there).
    pub fn dir(&self) -> &std::path::Path {
        self.process.dir()
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.process.ports()[0])
    }

    /// Stops the server cleanly (SIGTERM), so it saves its sessions and queues.
    pub fn stop(&mut self) {
        self.process.terminate();
    }

    /// Starts the server again on the same port and data; waits until it accepts.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.process.start_listening().await
    }
}

/// A broker on the machine's Mosquitto, or — when it is not reachable — a
/// failure under `CI=true`, otherwise a printed skip and `None`.
#[allow(clippy::expect_used)] // SHARED_ADDRESS is a constant that parses (tested).
pub async fn shared_or_skip(test: &str) -> Option<MqttBroker> {
    let broker = MqttBroker::new(SHARED_ADDRESS).expect("a valid address");
    rmicro::broker::testing::reachable_or_skip(broker, test).await
}
