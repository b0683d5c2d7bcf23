//! `rmicro-bench gateway`: `POST` JSON → `rmicro api` (the shipped binary, default
//! flags) → the shipped greeter, against the peer a Rust team would write by hand
//! (an axum handler: JSON → tonic client → the same greeter), and a raw axum JSON
//! echo (the floor: no upstream call at all), under `wrk` (a C load generator,
//! many connections). Each round runs every server in turn, the order rotating.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Options of `rmicro-bench gateway`.
#[derive(clap::Parser, Clone)]
pub struct GatewayArgs {
    /// Measured time per server per round.
    #[arg(long, default_value = "10s", value_parser = rmicro::cmd::parse_duration)]
    duration: Duration,
    /// Rounds; the order of the servers rotates.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// HTTP/1.1 connections (`wrk -c`).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk's threads (`wrk -t`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// One wrk run.
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    cpu_us: f64,
}

/// `10.5us`, `1.20ms`, `2.00s` → microseconds.
fn micros(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn wrk_once(
    url: &str,
    pid: u32,
    args: &GatewayArgs,
    script: &std::path::Path,
) -> anyhow::Result<Run> {
    // An unmeasured second first: connections up, caches warm.
    let warm = Command::new("wrk")
        .args(["-t1", "-c8", "-d1s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run wrk ({e}): apt-get install wrk"))?;
    anyhow::ensure!(
        warm.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let before = crate::summary::cpu_seconds(pid);
    let output = Command::new("wrk")
        .args(["-t", &args.threads.to_string()])
        .args(["-c", &args.connections.to_string()])
        .args(["-d", &format!("{}s", args.duration.as_secs().max(1))])
        .args(["--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()?;
    let after = crate::summary::cpu_seconds(pid);
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {stdout}");
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output: {stdout}"))?;
    let p50_us = field("50%").and_then(|v| micros(&v)).unwrap_or_default();
    let p99_us = field("99%").and_then(|v| micros(&v)).unwrap_or_default();
    // "  123456 requests in 10.00s, 12.34MB read"
    let requests: u64 = stdout
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_default();
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let socket_errors: u64 = field("Socket errors:")
        .map(|v| {
            v.split(", ")
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or_default();
    Ok(Run {
        rps,
        p50_us,
        p99_us,
        errors: non_2xx + socket_errors,
        cpu_us: crate::summary::cpu_per_request(before, after, requests),
    })
}

/// Starts a child that prints `LISTENING <addr>` (or the gateway's own line)
/// first on stdout; its address.
fn listening(mut child: Child, what: &str) -> anyhow::Result<(Child, String)> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let address = line
        .strip_prefix("LISTENING ")
        .or_else(|| line.strip_prefix("rmicro api listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{what} did not start: {line:?}"))?;
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Ok((child, address))
}

/// Kills the children when the benchmark ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `rmicro-bench gateway`.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let rmicro = exe.with_file_name("rmicro");
    anyhow::ensure!(
        rmicro.is_file(),
        "{} is missing: run `cargo build --release -p rmicro-cli -p greeter -p rmicro-bench` first",
        rmicro.display()
    );
    let dir = std::env::temp_dir().join(format!("rmicro-bench-gateway-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let registry = dir.to_string_lossy().into_owned();
    let (greeter, upstream) =
        crate::spawn_greeter(&["--registry", "local", "--registry-address", &registry])?;
    let mut children = Children(vec![greeter]);
    let mut start = |command: &mut Command, what: &str| -> anyhow::Result<(u32, String)> {
        let (child, address) = listening(
            command
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?,
            what,
        )?;
        let pid = child.id();
        children.0.push(child);
        Ok((pid, address))
    };
    let (gateway_pid, gateway_address) = start(
        Command::new(&rmicro).args([
            "api",
            "--address",
            "127.0.0.1:0",
            "--registry",
            "local",
            "--registry-address",
            &registry,
        ]),
        "rmicro api",
    )?;
    let (axum_pid, axum_address) = start(
        Command::new(&exe).args(["axum-gateway", "--upstream", &upstream]),
        "the axum handler",
    )?;
    let (echo_pid, echo_address) = start(Command::new(&exe).arg("axum-echo"), "the axum echo")?;
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"name\": \"bench\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )?;
    // The same reply from both before measuring.
    for url in [
        format!("http://{gateway_address}/greeter/say-hello"),
        format!("http://{axum_address}/greeter/say-hello"),
    ] {
        let out = Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                "{\"name\":\"bench\"}",
            ])
            .arg(&url)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(text.contains("Hello bench"), "{url} answered {text:?}");
    }
    let servers = [
        (
            "axum+tonic",
            format!("http://{axum_address}/greeter/say-hello"),
            axum_pid,
        ),
        (
            "rmicro api",
            format!("http://{gateway_address}/greeter/say-hello"),
            gateway_pid,
        ),
        ("axum echo", format!("http://{echo_address}/echo"), echo_pid),
    ];
    println!(
        "POST {{\"name\":\"bench\"}} under wrk -t {} -c {}, {:?} x {} rounds per server",
        args.threads, args.connections, args.duration, args.rounds
    );
    let mut runs: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for i in (0..servers.len()).map(|i| (i + round as usize) % servers.len()) {
            let (name, url, pid) = &servers[i];
            let run = wrk_once(url, *pid, &args, &script)?;
            println!(
                "  round {} {:>10}: {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  server CPU {:>6.2} us/req  errors {}",
                round + 1,
                name,
                run.rps,
                run.p50_us,
                run.p99_us,
                run.cpu_us,
                run.errors
            );
            runs[i].push(run);
        }
    }
    let median = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    println!("\nserver            req/s (median)   p99 us (median)   server CPU us/req   errors");
    let mut summary = Vec::new();
    for ((name, ..), runs) in servers.iter().zip(&runs) {
        let rps = median(runs.iter().map(|r| r.rps).collect());
        let p99 = median(runs.iter().map(|r| r.p99_us).collect());
        let cpu = median(runs.iter().map(|r| r.cpu_us).collect());
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        println!("{name:<14} {rps:>12.0} {p99:>17.0} {cpu:>19.2} {errors:>8}");
        summary.push((rps, p99));
    }
    let (peer, gateway, echo) = (summary[0], summary[1], summary[2]);
    println!(
        "\nrmicro api / axum+tonic: throughput {:.3}x (target >= 1.0), p99 {:.3}x (target <= 1.1)",
        gateway.0 / peer.0,
        gateway.1 / peer.1
    );
    println!(
        "rmicro api / axum echo (the floor): throughput {:.3}x, p99 {:.3}x",
        gateway.0 / echo.0,
        gateway.1 / echo.1
    );
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The hand-written peer: POST JSON → tonic client → the greeter → JSON.
pub async fn axum_gateway(upstream: &str) -> anyhow::Result<()> {
    use axum::{Json, Router, extract::State, routing::post};
    #[derive(serde::Deserialize)]
    struct Hello {
        #[serde(default)]
        name: String,
        #[serde(default)]
        count: i32,
    }
    #[derive(serde::Serialize)]
    struct Reply {
        message: String,
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{upstream}"))?
        .connect()
        .await?;
    let client = crate::TonicClient::new(channel);
    async fn hello(
        State(mut client): State<crate::TonicClient<tonic::transport::Channel>>,
        Json(body): Json<Hello>,
    ) -> Result<Json<Reply>, (axum::http::StatusCode, String)> {
        let reply = client
            .say_hello(crate::HelloRequest {
                name: body.name,
                count: body.count,
            })
            .await
            .map_err(|s| (axum::http::StatusCode::BAD_GATEWAY, s.message().to_owned()))?;
        Ok(Json(Reply {
            message: reply.into_inner().message,
        }))
    }
    let app = Router::new()
        .route("/greeter/say-hello", post(hello))
        .with_state(client);
    serve(app).await
}

/// The floor: POST JSON → parsed → written back.
pub async fn axum_echo() -> anyhow::Result<()> {
    use axum::{Json, Router, routing::post};
    async fn echo(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(body)
    }
    serve(Router::new().route("/echo", post(echo))).await
}

async fn serve(app: axum::Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
