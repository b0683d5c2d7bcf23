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
        let Some(binary) = rmicro::testing::find_binary("mosquitto", "RMICRO_MOSQUITTO") else {
            return Ok(None);
        };
        let mut config = None;
        let process = rmicro::testing::ServerProcess::new("mosquitto", binary, 1, |dir, ports| {
            let path = dir.join("mosquitto.conf");
            // `user root`: started as root, mosquitto would otherwise switch
            // to the `mosquitto` user, which cannot write its database into
            // this directory, and lose every session on restart (without it
            // the log says "Error saving in-memory database … Permission
            // denied"). Started as any other user it has no effect.
            config = Some((
                path.clone(),
                format!(
                    "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 100\nuser root\n",
                    ports[0],
                    dir.display()
                ),
            ));
            vec!["-c".into(), path.into()]
        })?;
        if let Some((path, text)) = config {
            std::fs::write(path, text)?;
        }
        let mut server = MosquittoServer { process };
        server.resume().await?;
        Ok(Some(server))
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
