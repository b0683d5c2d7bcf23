//! `rmicro bench` against h2load on the same shipped greeter, in one run: how much
//! the CLI's own cost hides of the server's throughput (issue 16 asks for ≥ 0.9×
//! h2load's requests per second). Each round loads the greeter with h2load, then
//! with `rmicro bench` at the same connections × streams, from a fresh process.

use crate::h2load::{Shape, h2load_once};
use std::process::Command;

/// Options of `rmicro-bench cli`.
#[derive(clap::Parser, Clone)]
pub struct CliArgs {
    /// How hard and how long each load generator loads the greeter.
    #[command(flatten)]
    pub load: Shape,
}

/// Runs `rmicro-bench cli`.
pub async fn run(args: CliArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let rmicro = exe.with_file_name("rmicro");
    anyhow::ensure!(
        rmicro.is_file(),
        "{} is missing: run `cargo build --release -p rmicro-cli` first",
        rmicro.display()
    );
    let body = crate::h2load::say_hello_file("cli-bench")?;
    let in_flight = args.load.connections * args.load.streams;
    println!(
        "unary SayHello on the shipped greeter: h2load -c {} -m {} vs rmicro bench -c {in_flight} --connections {}, {:?} x {} rounds",
        args.load.connections,
        args.load.streams,
        args.load.connections,
        args.load.duration,
        args.load.rounds
    );
    let (mut h2, mut cli) = (Vec::new(), Vec::new());
    for round in 0..args.load.rounds {
        let (mut child, address) = crate::spawn_greeter(&[])?;
        let h2load = h2load_once(
            &address,
            child.id(),
            &args.load,
            &body,
            "/greeter.v1.Greeter/SayHello",
            &[],
        );
        // Warm-up, then the measured run, of `rmicro bench` on the same process.
        let bench = |duration: std::time::Duration| {
            Command::new(&rmicro)
                .args([
                    "bench",
                    "greeter",
                    "greeter.v1.Greeter.SayHello",
                    r#"{"name":"bench"}"#,
                ])
                .args(["-c", &in_flight.to_string()])
                .args(["--connections", &args.load.connections.to_string()])
                .args(["-z", &format!("{}ms", duration.as_millis())])
                .args(["--address", &address, "--output", "json"])
                .output()
        };
        let warm = bench(args.load.warmup);
        let measured = bench(args.load.duration);
        let _ = child.kill();
        let _ = child.wait();
        let (h2load, _, measured) = (h2load?, warm?, measured?);
        anyhow::ensure!(
            measured.status.success(),
            "rmicro bench failed: {}",
            String::from_utf8_lossy(&measured.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&measured.stdout)?;
        let rps = report["rps"].as_f64().unwrap_or_default();
        let ok = report["statuses"]["OK"].as_u64().unwrap_or_default();
        println!(
            "  round {}: h2load {:>9.0} req/s (p50 {} us, p99 {} us) | rmicro bench {:>9.0} req/s (p50 {:.0} us, p99 {:.0} us, {ok} OK) | ratio {:.3}",
            round + 1,
            h2load.rps,
            h2load.latency.value_at_quantile(0.5),
            h2load.latency.value_at_quantile(0.99),
            rps,
            report["latency_ms"]["p50"].as_f64().unwrap_or_default() * 1000.0,
            report["latency_ms"]["p99"].as_f64().unwrap_or_default() * 1000.0,
            rps / h2load.rps
        );
        h2.push(h2load.rps);
        cli.push(rps);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (h2, cli) = (median(&mut h2), median(&mut cli));
    println!(
        "median: h2load {h2:.0} req/s, rmicro bench {cli:.0} req/s: ratio {:.3}",
        cli / h2
    );
    Ok(())
}
