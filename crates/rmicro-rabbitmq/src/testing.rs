//! Test support: the RabbitMQ every machine of this project runs on
//! 127.0.0.1:5672 (guest/guest).

use super::RabbitBroker;

/// The machine's RabbitMQ.
pub const SHARED_ADDRESS: &str = super::DEFAULT_ADDRESS;

/// A private RabbitMQ node (its own name, ports, data and config; no plugins)
/// on a free loopback port, for tests that restart the server. Debian's
/// `rabbitmq-server` runs the node as the `rabbitmq` user, so its directory is
/// handed to that user. Stopped and removed when dropped.
pub struct RabbitServer {
    process: rmicro::testing::ServerProcess,
}

impl RabbitServer {
    /// Starts a node and waits until it accepts AMQP clients; `Ok(None)` when
    /// `rabbitmq-server` is not installed.
    pub async fn start() -> std::io::Result<Option<RabbitServer>> {
        Self::with_config(|port| format!("listeners.tcp.local = 127.0.0.1:{port}\n")).await
    }

    /// Starts a node whose `rabbitmq.conf` holds what `config(port)` gives (its
    /// listeners on `port`, TLS options, a default user), `loopback_users = none`
    /// added; waits until the port accepts connections.
    pub async fn with_config(
        config: impl FnOnce(u16) -> String,
    ) -> std::io::Result<Option<RabbitServer>> {
        let Some(binary) =
            rmicro::testing::find_binary("rabbitmq-server", "RMICRO_RABBITMQ_SERVER")
        else {
            return Ok(None);
        };
        let mut process =
            rmicro::testing::ServerProcess::new("rabbitmq", binary, 2, |_, _| Vec::new())?;
        let dir = process.dir().to_owned();
        let (port, dist) = (process.ports()[0], process.ports()[1]);
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("{}loopback_users = none\n", config(port)),
        )?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let _ = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        for (key, value) in [
            ("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf")),
            ("RABBITMQ_MNESIA_BASE", dir.join("mnesia")),
            ("RABBITMQ_LOG_BASE", dir.join("log")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins")),
            ("RABBITMQ_PID_FILE", dir.join("pid")),
            ("RABBITMQ_FEATURE_FLAGS_FILE", dir.join("feature_flags")),
            ("RABBITMQ_PLUGINS_EXPAND_DIR", dir.join("plugins-expand")),
        ] {
            process = process.env(key, value);
        }
        process = process.env("RABBITMQ_DIST_PORT", dist.to_string()).env(
            "RABBITMQ_NODENAME",
            format!("rmicro{}x{port}@localhost", std::process::id()),
        );
        let mut server = RabbitServer { process };
        server.resume().await?;
        Ok(Some(server))
    }

    /// The AMQP (or AMQPS) port.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn address(&self) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.process.ports()[0]
        )
    }

    /// Kills the node (SIGKILL to the Erlang VM, as a crash); its data stays.
    pub fn stop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.process.dir().join("pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
        self.process.stop();
        let port = self.process.ports()[0];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts the node again on the same ports and data; waits until it accepts.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.process.start_listening().await
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A broker on the machine's RabbitMQ, or — when it is not reachable — a failure
/// under `CI=true`, otherwise a printed skip and `None`.
#[allow(clippy::expect_used)] // SHARED_ADDRESS is a constant that parses (tested).
pub async fn shared_or_skip(test: &str) -> Option<RabbitBroker> {
    let broker = RabbitBroker::new(SHARED_ADDRESS).expect("a valid address");
    rmicro::broker::testing::reachable_or_skip(broker, test).await
}
