//! rmicro vs hand-written tonic, same proto, same load generator, same run.
//!
//! `rmicro-bench compare` starts each server in its own process (alternating the order
//! every round), drives it with the same closed-loop load generator (a raw tonic client
//! over a fixed number of HTTP/2 connections), and prints requests/s, p50 and p99
//! latency for both, and their ratios.

mod broker;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tonic-generated code for the greeter proto.
mod tonic_greeter {
    tonic::include_proto!("greeter.v1");
}

use tonic_greeter::greeter_client::GreeterClient as TonicClient;
use tonic_greeter::greeter_server::{Greeter as TonicGreeter, GreeterServer as TonicServer};
use tonic_greeter::{HelloReply, HelloRequest};

#[derive(Parser)]
#[command(about = "Benchmark rmicro against hand-written tonic")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run both servers under the same load and compare (the default).
    Compare(LoadArgs),
    /// Serve the greeter with `rmicro` or `tonic` (used by `compare`).
    Serve {
        /// `rmicro` or `tonic`.
        kind: String,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:0")]
        address: String,
        /// Register in the local registry in this directory (rmicro only).
        #[arg(long)]
        registry_dir: Option<String>,
    },
    /// Calls by service name through the selector vs calls to a fixed address.
    Discovery(LoadArgs),
    /// Publish -> consume throughput per broker backend vs its own client.
    Broker(broker::BrokerArgs),
}

#[derive(clap::Parser, Clone)]
struct LoadArgs {
    /// Measured time per server per round.
    #[arg(long, default_value = "5s", value_parser = rmicro::cmd::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up per server per round.
    #[arg(long, default_value = "1s", value_parser = rmicro::cmd::parse_duration)]
    warmup: Duration,
    /// Rounds; the servers alternate which goes first.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// HTTP/2 connections the load generator opens.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Requests in flight at once (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

struct Tonic;

#[tonic::async_trait]
impl TonicGreeter for Tonic {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let name = request.into_inner().name;
        if name.trim().is_empty() {
            return Err(tonic::Status::invalid_argument("name must not be empty"));
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello {name}"),
        }))
    }

    type SayHelloStreamStream =
        futures_util::stream::BoxStream<'static, Result<HelloReply, tonic::Status>>;

    async fn say_hello_stream(
        &self,
        _: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<Self::SayHelloStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }

    async fn collect(
        &self,
        _: tonic::Request<tonic::Streaming<HelloRequest>>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }

    type ChatStream = futures_util::stream::BoxStream<'static, Result<HelloReply, tonic::Status>>;

    async fn chat(
        &self,
        _: tonic::Request<tonic::Streaming<HelloRequest>>,
    ) -> Result<tonic::Response<Self::ChatStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }
}

async fn serve(kind: &str, address: &str, registry_dir: Option<String>) -> anyhow::Result<()> {
    match kind {
        "rmicro" => {
            let mut args = vec![
                "bench".to_owned(),
                "--log-level".into(),
                "warn".into(),
                "--registry".into(),
            ];
            match registry_dir {
                Some(dir) => args.extend(["local".into(), "--registry-address".into(), dir]),
                None => args.push("memory".into()),
            }
            let service = rmicro::Service::builder("greeter")
                .address(address)
                .args(args)
                .handle(greeter::proto::GreeterServer::new(greeter::Greeter))
                .build()?;
            let server = service.start().await?;
            println!("LISTENING {}", server.local_addr());
            std::future::pending::<()>().await;
        }
        "tonic" => {
            let listener = tokio::net::TcpListener::bind(address).await?;
            println!("LISTENING {}", listener.local_addr()?);
            tonic::transport::Server::builder()
                .add_service(TonicServer::new(Tonic))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await?;
        }
        other => anyhow::bail!("unknown server kind `{other}`: use rmicro or tonic"),
    }
    Ok(())
}

/// What one measured run produced.
struct Measured {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// One call of the load; resolves to whether it succeeded.
type Call =
    std::sync::Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, bool> + Send + Sync>;

/// Closed loop: `concurrency` tasks, each sending its next call as soon as the
/// previous one returns, for `duration`; `calls[i % len]` makes task i's calls.
async fn closed_loop(
    calls: &[Call],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let stop = start + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let call = calls[i % calls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < stop {
                let t0 = Instant::now();
                if call().await {
                    ok += 1;
                    let _ = hist.record(t0.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (ok, errors, hist)
        }));
    }
    let mut measured = Measured {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (ok, errors, hist) = task.await?;
        measured.requests += ok;
        measured.errors += errors;
        measured.latency.add(hist)?;
    }
    measured.elapsed = start.elapsed();
    Ok(measured)
}

/// Load from raw tonic clients over `connections` HTTP/2 connections.
async fn load(address: &str, args: &LoadArgs, duration: Duration) -> anyhow::Result<Measured> {
    let mut calls: Vec<Call> = Vec::new();
    for _ in 0..args.connections {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        let client = TonicClient::new(channel);
        calls.push(std::sync::Arc::new(move || {
            let mut client = client.clone();
            Box::pin(async move {
                client
                    .say_hello(HelloRequest {
                        name: "bench".into(),
                        count: 0,
                    })
                    .await
                    .is_ok()
            })
        }));
    }
    closed_loop(&calls, args.concurrency, duration).await
}

/// Load from an rmicro typed client.
async fn load_rmicro(
    client: greeter::proto::GreeterClient,
    args: &LoadArgs,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let call: Call = std::sync::Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            client
                .say_hello(greeter::proto::HelloRequest {
                    name: "bench".into(),
                    count: 0,
                })
                .await
                .is_ok()
        })
    });
    closed_loop(&[call], args.concurrency, duration).await
}

/// Starts `rmicro-bench serve KIND` and returns it with its address.
fn spawn_server(kind: &str, extra: &[&str]) -> anyhow::Result<(std::process::Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", kind])
        .args(extra)
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
        .ok_or_else(|| anyhow::anyhow!("{kind} server did not start: {line:?}"))?;
    Ok((child, address))
}

struct Totals {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Totals {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

async fn compare(args: LoadArgs) -> anyhow::Result<()> {
    let kinds = ["tonic", "rmicro"];
    let mut totals: Vec<Totals> = kinds
        .iter()
        .map(|_| {
            Ok(Totals {
                requests: 0,
                errors: 0,
                elapsed: Duration::ZERO,
                latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    println!(
        "unary SayHello, {} connections, {} in flight, {:?} x {} rounds per server (+{:?} warm-up)",
        args.connections, args.concurrency, args.duration, args.rounds, args.warmup
    );
    for round in 0..args.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for i in order {
            let (mut child, address) = spawn_server(kinds[i], &[])?;
            let result = async {
                load(&address, &args, args.warmup).await?;
                load(&address, &args, args.duration).await
            }
            .await;
            let _ = child.kill();
            let _ = child.wait();
            let m = result?;
            println!(
                "  round {} {:>6}: {:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  errors {}",
                round + 1,
                kinds[i],
                m.requests as f64 / m.elapsed.as_secs_f64(),
                m.latency.value_at_quantile(0.50),
                m.latency.value_at_quantile(0.99),
                m.errors
            );
            let t = &mut totals[i];
            t.requests += m.requests;
            t.errors += m.errors;
            t.elapsed += m.elapsed;
            t.latency.add(&m.latency)?;
        }
    }
    println!(
        "\n{:<8} {:>10} {:>9} {:>9} {:>7}",
        "server", "req/s", "p50 us", "p99 us", "errors"
    );
    for (kind, t) in kinds.iter().zip(&totals) {
        println!(
            "{:<8} {:>10.0} {:>9} {:>9} {:>7}",
            kind,
            t.rps(),
            t.latency.value_at_quantile(0.50),
            t.latency.value_at_quantile(0.99),
            t.errors
        );
    }
    let (tonic, rmicro) = (&totals[0], &totals[1]);
    let throughput = rmicro.rps() / tonic.rps();
    let p50 = rmicro.latency.value_at_quantile(0.50) as f64
        / tonic.latency.value_at_quantile(0.50) as f64;
    let p99 = rmicro.latency.value_at_quantile(0.99) as f64
        / tonic.latency.value_at_quantile(0.99) as f64;
    println!(
        "\nrmicro / tonic: throughput {throughput:.3}x (target >= 0.95x), p50 {p50:.3}x, p99 {p99:.3}x (target <= 1.10x)"
    );
    Ok(())
}

/// One rmicro greeter registered in a local registry; the same rmicro client code
/// calls it by name (selector + watch-fed cache) and by fixed address, alternating.
async fn discovery(args: LoadArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("rmicro-bench-registry-{}", std::process::id()));
    let dir_text = dir.display().to_string();
    let (mut child, address) = spawn_server("rmicro", &["--registry-dir", &dir_text])?;
    let registry: rmicro::registry::SharedRegistry =
        std::sync::Arc::new(rmicro::registry::LocalRegistry::new(&dir));
    let selector = std::sync::Arc::new(rmicro::selector::Selector::new(
        registry,
        rmicro::selector::Strategy::Random,
    ));
    let by_name = greeter::proto::GreeterClient::new(
        "greeter",
        rmicro::Client::with_selector(rmicro::client::ClientOptions::default(), selector),
    );
    let fixed = greeter::proto::GreeterClient::new(
        "greeter",
        rmicro::Client::default().with_route("greeter", address.clone()),
    );
    println!(
        "unary SayHello via the rmicro client, {} in flight, {:?} x {} rounds (+{:?} warm-up)",
        args.concurrency, args.duration, args.rounds, args.warmup
    );
    let kinds = [("fixed", fixed), ("by-name", by_name)];
    let mut totals: Vec<(u64, Duration, Histogram<u64>)> = vec![
        (
            0,
            Duration::ZERO,
            Histogram::new_with_bounds(1, 60_000_000, 3)?
        );
        2
    ];
    let result: anyhow::Result<()> = async {
        for round in 0..args.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let (name, client) = &kinds[i];
                load_rmicro(client.clone(), &args, args.warmup).await?;
                let m = load_rmicro(client.clone(), &args, args.duration).await?;
                println!(
                    "  round {} {:>8}: {:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  errors {}",
                    round + 1,
                    name,
                    m.requests as f64 / m.elapsed.as_secs_f64(),
                    m.latency.value_at_quantile(0.5),
                    m.latency.value_at_quantile(0.99),
                    m.errors
                );
                totals[i].0 += m.requests;
                totals[i].1 += m.elapsed;
                totals[i].2.add(&m.latency)?;
            }
        }
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let rps = |t: &(u64, Duration, Histogram<u64>)| t.0 as f64 / t.1.as_secs_f64();
    println!(
        "\nby-name / fixed: throughput {:.3}x (target >= 0.97x), p99 {:.3}x",
        rps(&totals[1]) / rps(&totals[0]),
        totals[1].2.value_at_quantile(0.99) as f64 / totals[0].2.value_at_quantile(0.99) as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Serve {
            kind,
            address,
            registry_dir,
        }) => serve(&kind, &address, registry_dir).await,
        Some(Cmd::Discovery(args)) => discovery(args).await,
        Some(Cmd::Broker(args)) => broker::run(args).await,
        Some(Cmd::Compare(args)) => compare(args).await,
        None => compare(LoadArgs::parse_from(["compare"])).await,
    }
}
