//! Test support: the Redis every machine of this project runs on 127.0.0.1:6379,
//! and private `redis-server`s for tests that restart the server.

use super::RedisBroker;

/// A private `redis-server` on a free loopback port with an append-only file
/// fsynced on every write (so a confirmed `XADD` survives a restart). Stopped
/// and removed when dropped.
pub struct RedisServer {
    process: rmicro::testing::ServerProcess,
}

impl RedisServer {
    /// Starts a server and waits until it answers; `Ok(None)` when
    /// `redis-server` is not installed.
    pub async fn start() -> std::io::Result<Option<RedisServer>> {
        let Some(binary) = rmicro::testing::find_binary("redis-server", "RMICRO_REDIS_SERVER")
        else {
            return Ok(None);
        };
        let process = rmicro::testing::ServerProcess::new("redis", binary, 1, |dir, ports| {
            let port = ports[0].to_string();
            let mut args: Vec<std::ffi::OsString> = vec!["--bind".into(), "127.0.0.1".into()];
            args.extend(["--port".into(), port.into(), "--dir".into(), dir.into()]);
            args.extend(
                [
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ]
                .into_iter()
                .map(Into::into),
            );
            args
        })?;
        let mut server = RedisServer { process };
        server.resume().await?;
        Ok(Some(server))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.ports()[0])
    }

    /// Kills the server (SIGKILL); its append-only file stays.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same port and data; waits until it answers.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        let client = redis::Client::open(self.address().as_str()).map_err(std::io::Error::other)?;
        self.process
            .start(|| {
                let client = client.clone();
                async move {
                    match client.get_multiplexed_async_connection().await {
                        Ok(mut connection) => redis::cmd("PING")
                            .query_async::<String>(&mut connection)
                            .await
                            .is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await
    }
}

/// The machine's Redis.
pub const SHARED_ADDRESS: &str = "redis://127.0.0.1:6379";

/// A broker on the machine's Redis (with `ack_wait`), or — when it is not
/// reachable — a failure under `CI=true`, otherwise a printed skip and `None`.
#[allow(clippy::expect_used)] // SHARED_ADDRESS is a constant that parses (tested).
pub async fn shared_or_skip(test: &str, ack_wait: &str) -> Option<RedisBroker> {
    let broker = RedisBroker::new(&format!("{SHARED_ADDRESS}?ack_wait={ack_wait}"))
        .expect("a valid address");
    rmicro::broker::testing::reachable_or_skip(broker, test).await
}
