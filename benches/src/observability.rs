//! `rmicro-bench observability`: what tracing, metrics and ECS request logs cost.
//!
//! The shipped `greeter` binary with default flags (none) against the same binary
//! with each piece of observability turned on by its flags, alternating per round,
//! under the Rust driver; spans go to a local OTLP receiver (`rmicro-bench
//! otlp-sink`, a separate process built on opentelemetry-proto's generated
//! service, counting what it receives) so exporting is real. Throughput, p50/p99
//! and the CPU per request of client and server together; each piece's cost per
//! call is its CPU per request minus none's.

use crate::summary::{self, Series};
use crate::{LoadArgs, load_rmicro, record, spawn_greeter};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Options of `rmicro-bench observability`.
#[derive(clap::Parser, Clone)]
pub struct ObservabilityArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Stacks to compare, `none` first: none, full (tracing at 100 % + metrics +
    /// ECS request logs to a file), tracing (100 %), ratio (tracing at 0.01),
    /// metrics, logs.
    #[arg(long, default_value = "none,full,ratio,tracing,metrics,logs")]
    stacks: String,
}

/// A running `otlp-sink` process; killed when dropped.
pub struct Sink {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`, OTLP over gRPC.
    pub endpoint: String,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    /// Starts `rmicro-bench otlp-sink` and waits for its address.
    pub fn start() -> anyhow::Result<Sink> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("otlp-sink")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .strip_prefix("LISTENING ")
            .map(|a| a.trim().to_owned())
            .ok_or_else(|| anyhow::anyhow!("the OTLP sink did not start: {line:?}"))?;
        Ok(Sink {
            child,
            endpoint: format!("http://{address}"),
        })
    }
}

/// Counts the spans it is sent.
#[derive(Default, Clone)]
struct Counting {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Counting {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// `rmicro-bench otlp-sink`: an OTLP/gRPC trace receiver on a free loopback port
/// that prints `LISTENING address`, then every 5 s the spans received so far.
pub async fn sink() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    let counting = Counting::default();
    let spans = counting.spans.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            eprintln!(
                "otlp-sink: {} spans received",
                spans.load(Ordering::Relaxed)
            );
        }
    });
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(counting))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// The greeter flags of stack `name`, spans to `sink`, logs into `dir`.
pub fn flags(name: &str, sink: &str, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let tracing = vec!["--tracing-endpoint".to_owned(), sink.to_owned()];
    let metrics = vec!["--metrics-address".to_owned(), "127.0.0.1:0".to_owned()];
    let logs = vec![
        "--log-format".to_owned(),
        "ecs".to_owned(),
        "--log-file".to_owned(),
        dir.join(format!("{name}.log")).display().to_string(),
        // Every call's request log (the logging wrapper writes successes at debug).
        "--log-level".to_owned(),
        "info,rmicro_core::wrapper::logging=debug".to_owned(),
    ];
    Ok(match name {
        "none" => vec![],
        "full" => [tracing, metrics, logs].concat(),
        "tracing" => tracing,
        "ratio" => [
            tracing,
            vec!["--tracing-ratio".to_owned(), "0.01".to_owned()],
        ]
        .concat(),
        "metrics" => metrics,
        "logs" => logs,
        other => {
            anyhow::bail!("unknown stack `{other}`: none, full, tracing, ratio, metrics or logs")
        }
    })
}

/// The sink `h2load`'s observability kinds share, started on first use.
static SHARED: std::sync::Mutex<Option<Sink>> = std::sync::Mutex::new(None);

/// The shared sink's endpoint, starting it if needed.
pub fn shared_sink() -> anyhow::Result<String> {
    let mut shared = SHARED
        .lock()
        .map_err(|_| anyhow::anyhow!("sink lock poisoned"))?;
    if shared.is_none() {
        *shared = Some(Sink::start()?);
    }
    Ok(shared
        .as_ref()
        .map(|s| s.endpoint.clone())
        .unwrap_or_default())
}

/// Stops the shared sink, if one was started.
pub fn stop_shared_sink() {
    if let Ok(mut shared) = SHARED.lock() {
        shared.take();
    }
}

/// Runs `rmicro-bench observability`.
pub async fn run(args: ObservabilityArgs) -> anyhow::Result<()> {
    let load = &args.load;
    let names: Vec<&str> = args.stacks.split(',').collect();
    anyhow::ensure!(
        names.first() == Some(&"none") && names.len() > 1,
        "--stacks must start with none and name another"
    );
    let sink = Sink::start()?;
    let dir =
        std::env::temp_dir().join(format!("rmicro-bench-observability-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let result = async {
        for name in &names {
            let flags = flags(name, &sink.endpoint, &dir)?;
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let (child, address) = spawn_greeter(&flags)?;
            servers.push(child);
            clients.push(greeter::proto::GreeterClient::new(
                "greeter",
                rmicro::Client::default().with_route("greeter", address),
            ));
        }
        println!(
            "unary SayHello to the shipped greeter, {} in flight, {:?} x {} rounds (+{:?} warm-up)",
            load.concurrency, load.duration, load.rounds, load.warmup
        );
        println!(
            "  none: default flags\n  \
             full: --tracing-endpoint (OTLP/gRPC to a local receiver, every call sampled) \
             --metrics-address --log-format ecs --log-file (a request log line per call)\n  \
             tracing / ratio (--tracing-ratio 0.01) / metrics / logs: one piece alone"
        );
        let mut series: Vec<Series> = names
            .iter()
            .map(|n| Series::new(n))
            .collect::<anyhow::Result<_>>()?;
        for round in 0..load.rounds {
            for i in (0..names.len()).map(|i| (i + round as usize) % names.len()) {
                let (client, server) = (&clients[i], servers[i].id());
                load_rmicro(client.clone(), load, load.warmup).await?;
                let me = std::process::id();
                let before = [summary::cpu_seconds(me), summary::cpu_seconds(server)];
                let m = load_rmicro(client.clone(), load, load.duration).await?;
                let after = [summary::cpu_seconds(me), summary::cpu_seconds(server)];
                let cpu = (0..2)
                    .map(|k| summary::cpu_per_request(before[k], after[k], m.requests))
                    .sum::<f64>();
                record(&mut series[i], round, &m, cpu)?;
            }
        }
        summary::table(&series, "stack", "client+server");
        println!("\n(targets: full >= 0.85x, ratio >= 0.97x)");
        for s in &series[1..] {
            summary::ratios(s, &series[0]);
        }
        let base = summary::mean(&series[0].cpu_us);
        println!("\nCPU per call over none (client + server):");
        for s in &series[1..] {
            println!(
                "  {:>8}: {:+.2} us",
                s.kind,
                summary::mean(&s.cpu_us) - base
            );
        }
        anyhow::Ok(())
    }
    .await;
    for child in &mut servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(sink);
    result
}
