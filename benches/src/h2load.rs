//! The servers under `h2load` (nghttp2's C load generator): many connections, many
//! streams each, so the load generator's own cost does not hide the server's. Each
//! round runs every server in turn (the order rotates); latencies come from
//! h2load's per-request log, throughput from its summary.

use crate::{ratios, spawn_server};
use hdrhistogram::Histogram;
use prost::Message;
use std::process::Command;
use std::time::Duration;

/// Options of `rmicro-bench h2load`.
#[derive(clap::Parser, Clone)]
pub struct H2loadArgs {
    /// Measured time per server per round.
    #[arg(long, default_value = "10s", value_parser = rmicro::cmd::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up per server per round.
    #[arg(long, default_value = "2s", value_parser = rmicro::cmd::parse_duration)]
    warmup: Duration,
    /// Rounds; the order of the servers rotates.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// HTTP/2 connections (`h2load -c`).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Streams in flight per connection (`h2load -m`).
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// h2load's threads (`h2load -t`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Servers, tonic first: tonic, rmicro, rmicro+N (N no-op handler wrappers),
    /// greeter (the shipped binary, default flags).
    #[arg(long, default_value = "tonic,rmicro,rmicro+4,greeter")]
    servers: String,
}

/// One h2load run.
struct Run {
    requests: u64,
    failed: u64,
    rps: f64,
    latency: Histogram<u64>,
}

fn h2load_once(address: &str, args: &H2loadArgs, body: &std::path::Path) -> anyhow::Result<Run> {
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
        .arg("-d")
        .arg(body)
        .arg("--log-file")
        .arg(&log)
        .arg(format!("http://{address}/greeter.v1.Greeter/SayHello"))
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run h2load ({e}): apt-get install nghttp2-client"))?;
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
    Ok(Run {
        requests: counts.get(3).copied().unwrap_or_default(),
        failed: counts.get(4).copied().unwrap_or_default()
            + counts.get(5).copied().unwrap_or_default(),
        rps,
        latency,
    })
}

/// Runs `rmicro-bench h2load`.
pub async fn run(args: H2loadArgs) -> anyhow::Result<()> {
    let kinds: Vec<&str> = args.servers.split(',').collect();
    anyhow::ensure!(
        kinds.first() == Some(&"tonic"),
        "--servers must start with tonic"
    );
    let body = std::env::temp_dir().join(format!("rmicro-h2load-{}.req", std::process::id()));
    let message = greeter::proto::HelloRequest {
        name: "bench".into(),
        count: 0,
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(&body, framed)?;
    println!(
        "unary SayHello under h2load -c {} -m {} -t {}, {:?} x {} rounds per server (+{:?} warm-up)",
        args.connections, args.streams, args.threads, args.duration, args.rounds, args.warmup
    );
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut latency: Vec<Histogram<u64>> = kinds
        .iter()
        .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3))
        .collect::<Result<_, _>>()?;
    for round in 0..args.rounds {
        for i in (0..kinds.len()).map(|i| (i + round as usize) % kinds.len()) {
            let (mut child, address) = spawn_server(kinds[i], &[])?;
            let result = h2load_once(&address, &args, &body);
            let _ = child.kill();
            let _ = child.wait();
            let run = result?;
            println!(
                "  round {} {:>9}: {:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  done {} failed {}",
                round + 1,
                kinds[i],
                run.rps,
                run.latency.value_at_quantile(0.5),
                run.latency.value_at_quantile(0.99),
                run.requests,
                run.failed
            );
            rps[i].push(run.rps);
            latency[i].add(&run.latency)?;
        }
    }
    let _ = std::fs::remove_file(&body);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "\n{:<10} {:>10} {:>9} {:>9}",
        "server", "req/s", "p50 us", "p99 us"
    );
    for (i, kind) in kinds.iter().enumerate() {
        println!(
            "{:<10} {:>10.0} {:>9} {:>9}",
            kind,
            mean(&rps[i]),
            latency[i].value_at_quantile(0.5),
            latency[i].value_at_quantile(0.99)
        );
    }
    println!();
    for i in 1..kinds.len() {
        ratios(
            kinds[i],
            "tonic",
            mean(&rps[i]),
            mean(&rps[0]),
            &latency[i],
            &latency[0],
        );
    }
    // Wrappers and shipped defaults against the bare rmicro server.
    if let Some(bare) = kinds.iter().position(|k| *k == "rmicro") {
        for i in 1..kinds.len() {
            if i != bare {
                ratios(
                    kinds[i],
                    "rmicro",
                    mean(&rps[i]),
                    mean(&rps[bare]),
                    &latency[i],
                    &latency[bare],
                );
            }
        }
    }
    Ok(())
}
