//! The servers under `h2load` (nghttp2's C load generator): many connections, many
//! streams each, so the load generator's own cost does not hide the server's. Each
//! round runs every server in turn (the order rotates); latencies come from
//! h2load's per-request log, throughput from its summary.

use crate::spawn_server;
use hdrhistogram::Histogram;
use prost::Message;
use std::process::Command;
use std::time::Duration;

/// Options of `rmicro-bench h2load`.
#[derive(clap::Parser, Clone)]
pub struct H2loadArgs {
    /// How hard and how long each server is loaded.
    #[command(flatten)]
    pub load: Shape,
    /// Servers, tonic first: tonic, rmicro, rmicro+N (N no-op handler wrappers),
    /// greeter (the shipped binary, default flags), greeter+ratelimit (the same
    /// with `--ratelimit-server` too high to bite: the seed's server line),
    /// greeter+full (tracing at 100 % to a local OTLP receiver, metrics, ECS request
    /// logs to a file), greeter+ratio (tracing at 0.01).
    #[arg(
        long,
        default_value = "tonic,rmicro,rmicro+4,greeter,greeter+ratelimit"
    )]
    servers: String,
}

/// The load h2load puts on each server: shared by every h2load benchmark.
#[derive(clap::Args, Clone)]
pub struct Shape {
    /// Measured time per server per round.
    #[arg(long, default_value = "10s", value_parser = rmicro::cmd::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up per server per round.
    #[arg(long, default_value = "2s", value_parser = rmicro::cmd::parse_duration)]
    pub warmup: Duration,
    /// Rounds; the order of the servers rotates.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// HTTP/2 connections (`h2load -c`).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Streams in flight per connection (`h2load -m`).
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// h2load's threads (`h2load -t`).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// One h2load run.
pub struct Run {
    /// Requests that succeeded.
    pub requests: u64,
    /// Requests that failed or errored.
    pub failed: u64,
    /// Requests per second.
    pub rps: f64,
    /// Latency of the successful requests, µs.
    pub latency: Histogram<u64>,
    /// Server CPU µs per request over the measured part.
    pub cpu_us: f64,
}

/// Loads `http://{address}{path}` with the gRPC request in `body` (and `headers`,
/// `name: value`) for `args.duration`.
pub fn h2load_once(
    address: &str,
    server_pid: u32,
    args: &Shape,
    body: &std::path::Path,
    path: &str,
    headers: &[String],
) -> anyhow::Result<Run> {
    let log = std::env::temp_dir().join(format!("rmicro-h2load-{}.log", std::process::id()));
    let output = Command::new("h2load")
        .args(["-c", &args.connections.to_string()])
        .args(["-m", &args.streams.to_string()])
        .args(["-t", &args.threads.to_string()])
        .args(["-D", &format!("{}", args.duration.as_secs().max(1))])
        .args([
            "--warm-up-time",
            &format!("{}", args.warmup.as_secs().max(1)),
        ])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
        .arg("-d")
        .arg(body)
        .arg("--log-file")
        .arg(&log)
        .arg(format!("http://{address}{path}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run h2load ({e}): apt-get install nghttp2-client"))?;
    // The server's CPU over the measured part: from the end of the warm-up on.
    std::thread::sleep(args.warmup.max(Duration::from_secs(1)));
    let before = crate::summary::cpu_seconds(server_pid);
    let output = output.wait_with_output()?;
    let after = crate::summary::cpu_seconds(server_pid);
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "h2load failed: {stdout}");
    // "finished in 10.00s, 45678.90 req/s, 3.21MB/s"
    let rps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no req/s in h2load's output: {stdout}"))?;
    // "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    let counts: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .map(|l| {
            l.split(", ")
                .filter_map(|p| p.split(' ').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // Per request: start time (µs since the epoch), HTTP status, µs to the end.
    for line in std::fs::read_to_string(&log)?.lines() {
        let mut fields = line.split('\t');
        if let (Some(_), Some(status), Some(micros)) = (fields.next(), fields.next(), fields.next())
            && status == "200"
            && let Ok(micros) = micros.trim().parse::<u64>()
        {
            let _ = latency.record(micros.max(1));
        }
    }
    let _ = std::fs::remove_file(&log);
    let requests = counts.get(3).copied().unwrap_or_default();
    Ok(Run {
        cpu_us: crate::summary::cpu_per_request(before, after, requests),
        requests,
        failed: counts.get(4).copied().unwrap_or_default()
            + counts.get(5).copied().unwrap_or_default(),
        rps,
        latency,
    })
}

/// Writes the gRPC frame of `SayHello{name: "bench"}` to a temporary file for
/// `h2load -d` (named after `what`); its path.
pub fn say_hello_file(what: &str) -> anyhow::Result<std::path::PathBuf> {
    let body = std::env::temp_dir().join(format!("rmicro-{what}-{}.req", std::process::id()));
    let message = greeter::proto::HelloRequest {
        name: "bench".into(),
        count: 0,
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(&body, framed)?;
    Ok(body)
}

/// Runs `rmicro-bench h2load`.
pub async fn run(args: H2loadArgs) -> anyhow::Result<()> {
    let kinds: Vec<&str> = args.servers.split(',').collect();
    anyhow::ensure!(
        kinds.first() == Some(&"tonic"),
        "--servers must start with tonic"
    );
    let body = say_hello_file("h2load")?;
    println!(
        "unary SayHello under h2load -c {} -m {} -t {}, {:?} x {} rounds per server (+{:?} warm-up)",
        args.load.connections,
        args.load.streams,
        args.load.threads,
        args.load.duration,
        args.load.rounds,
        args.load.warmup
    );
    let mut series: Vec<crate::summary::Series> = kinds
        .iter()
        .map(|k| crate::summary::Series::new(k))
        .collect::<anyhow::Result<_>>()?;
    for round in 0..args.load.rounds {
        for i in (0..kinds.len()).map(|i| (i + round as usize) % kinds.len()) {
            let (mut child, address) = spawn_server(kinds[i], &[])?;
            let result = h2load_once(
                &address,
                child.id(),
                &args.load,
                &body,
                "/greeter.v1.Greeter/SayHello",
                &[],
            );
            let _ = child.kill();
            let _ = child.wait();
            let run = result?;
            println!(
                "  round {} {:>9}: {:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  CPU {:>6.2} us/req  done {} failed {}",
                round + 1,
                kinds[i],
                run.rps,
                run.latency.value_at_quantile(0.5),
                run.latency.value_at_quantile(0.99),
                run.cpu_us,
                run.requests,
                run.failed
            );
            let s = &mut series[i];
            s.rps.push(run.rps);
            s.cpu_us.push(run.cpu_us);
            s.errors += run.failed;
            s.latency.add(&run.latency)?;
        }
    }
    let _ = std::fs::remove_file(&body);
    crate::observability::stop_shared_sink();
    crate::summary::print(&series);
    Ok(())
}
