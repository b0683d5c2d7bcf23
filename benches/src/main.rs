//! rmicro vs hand-written tonic, same proto, same load generator, same run.
//!
//! `rmicro-bench compare` starts each server in its own process (alternating the order
//! every round), drives it with the same closed-loop load generator (a raw tonic client
//! over a fixed number of HTTP/2 connections), and prints requests/s, p50 and p99
//! latency for both, and their ratios.

mod broker;
mod summary;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tonic-generated code for the greeter proto.
mod cli_bench;
mod gateway;
mod h2load;
mod observability;
mod resilience;
mod user;

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
        /// No-op `from_fn` handler wrappers around the rmicro greeter.
        #[arg(long, default_value_t = 0)]
        noop_wrappers: usize,
    },
    /// The servers under h2load, a C load generator (many connections and streams).
    H2load(h2load::H2loadArgs),
    /// `rmicro bench` against h2load on the same shipped greeter (the CLI's overhead).
    Cli(cli_bench::CliArgs),
    /// The user service's GetUserInfo (the shipped `user` binary) against a
    /// hand-written tonic + sqlx service doing the same query on the same database.
    User(user::UserArgs),
    /// Serve the hand-written tonic + sqlx user service (used by `user`).
    TonicUser {
        /// The database (`mysql://…` or `postgres://…`).
        #[arg(long)]
        dsn: String,
        /// The HS256 key the tokens are checked with.
        #[arg(long)]
        secret: String,
    },
    /// The rmicro client with 4 no-op wrappers vs none, same server.
    ClientWrappers(LoadArgs),
    /// Calls by service name through the selector vs calls to a fixed address.
    Discovery(LoadArgs),
    /// `count` sequential unary calls from one client (`tonic`, `rmicro`, or
    /// `rmicro+4`: 2 `wrap_client` + 2 `wrap_call` no-op wrappers, `rmicro+breaker`:
    /// `Breaker::hystrix()`) to an rmicro server
    /// in another process: the workload `scripts/bench-instructions` counts under
    /// callgrind (instructions, not seconds, so a noisy machine does not blur it).
    ClientCalls {
        /// `tonic`, `rmicro`, `rmicro+4` or `rmicro+breaker`.
        client: String,
        /// Calls to make after 50 unmeasured ones.
        #[arg(long, default_value_t = 1000)]
        count: u64,
    },
    /// Publish -> consume throughput per broker backend vs its own client.
    Broker(broker::BrokerArgs),
    /// The seed's resilience stack (breaker + round-robin + server rate limit) vs
    /// no wrappers, end to end, then each wrapper's cost in ns per call.
    Resilience(resilience::ResilienceArgs),
    /// Tracing, metrics and ECS request logs on the shipped greeter vs none, end to
    /// end, and what each piece costs per call.
    Observability(observability::ObservabilityArgs),
    /// A local OTLP/gRPC trace receiver that counts spans (used by `observability`).
    OtlpSink,
    /// `rmicro api` in front of the greeter vs a hand-written axum + tonic handler
    /// and a raw axum JSON echo, under wrk.
    Gateway(gateway::GatewayArgs),
    /// The hand-written peer of the gateway benchmark (used by `gateway`).
    AxumGateway {
        /// The greeter's address.
        #[arg(long)]
        upstream: String,
    },
    /// A raw axum JSON echo, the gateway benchmark's floor (used by `gateway`).
    AxumEcho,
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
    /// Servers to compare, tonic first (`compare` only): tonic, rmicro, rmicro+N
    /// (N no-op handler wrappers), greeter (the shipped binary, default flags),
    /// greeter+ratelimit (the same with an unbiting `--ratelimit-server`).
    #[arg(long, default_value = "tonic,rmicro")]
    servers: String,
}

/// The rmicro client with no wrappers and with 4 no-op ones (2 `wrap_client`, 2
/// `wrap_call`), against one rmicro greeter, alternating per round.
async fn client_wrappers(args: LoadArgs) -> anyhow::Result<()> {
    let (mut child, address) = spawn_server("rmicro", &[])?;
    let plain = rmicro::client::ClientOptions::default();
    let wrapped = rmicro::client::ClientOptions::default()
        .wrap_client(noop())
        .wrap_client(noop())
        .wrap_call(noop())
        .wrap_call(noop());
    let client = |options| {
        greeter::proto::GreeterClient::new(
            "greeter",
            rmicro::Client::new(options).with_route("greeter", address.clone()),
        )
    };
    let kinds = [("none", client(plain)), ("4 no-op", client(wrapped))];
    println!(
        "unary SayHello via the rmicro client, {} in flight, {:?} x {} rounds (+{:?} warm-up)",
        args.concurrency, args.duration, args.rounds, args.warmup
    );
    let result = alternate_clients(&kinds, &args).await;
    let _ = child.kill();
    let _ = child.wait();
    let series = result?;
    summary::table(&series, "client", "client");
    println!();
    summary::ratios(&series[1], &series[0]);
    Ok(())
}

/// See [`Cmd::ClientCalls`].
async fn client_calls(kind: &str, count: u64) -> anyhow::Result<()> {
    let (mut child, address) = spawn_server("rmicro", &[])?;
    let result = async {
        let call: Call = match kind {
            "tonic" => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
                tonic_call(TonicClient::new(channel))
            }
            "rmicro" | "rmicro+4" | "rmicro+breaker" => {
                let mut options = rmicro::client::ClientOptions::default();
                if kind == "rmicro+4" {
                    options = options
                        .wrap_client(noop())
                        .wrap_client(noop())
                        .wrap_call(noop())
                        .wrap_call(noop());
                }
                if kind == "rmicro+breaker" {
                    options = options.wrap_client(rmicro::wrapper::breaker::Breaker::hystrix());
                }
                rmicro_call(greeter::proto::GreeterClient::new(
                    "greeter",
                    rmicro::Client::new(options).with_route("greeter", address.clone()),
                ))
            }
            other => {
                anyhow::bail!("unknown client `{other}`: tonic, rmicro, rmicro+4 or rmicro+breaker")
            }
        };
        for _ in 0..50 {
            anyhow::ensure!(call().await, "warm-up call failed");
        }
        let mut failed = 0u64;
        for _ in 0..count {
            if !call().await {
                failed += 1;
            }
        }
        anyhow::ensure!(failed == 0, "{failed} of {count} calls failed");
        println!("{kind}: {count} calls");
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
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

/// A no-op function wrapper, as a user writes one.
fn noop() -> impl rmicro::wrapper::HandlerLayer + rmicro::client::ClientLayer + Clone {
    rmicro::wrapper::from_fn(|call, next| next.run(call))
}

async fn serve(
    kind: &str,
    address: &str,
    registry_dir: Option<String>,
    noop_wrappers: usize,
) -> anyhow::Result<()> {
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
            let mut builder = rmicro::Service::builder("greeter")
                .address(address)
                .args(args)
                .handle(greeter::proto::GreeterServer::new(greeter::Greeter));
            for _ in 0..noop_wrappers {
                builder = builder.wrap_handler(noop());
            }
            let service = builder.build()?;
            let server = service.start().await?;
            println!("LISTENING {}", server.local_addr());
            std::future::pending::<()>().await;
        }
        "tonic" => {
            let listener = tokio::net::TcpListener::bind(address).await?;
            println!("LISTENING {}", listener.local_addr()?);
            // `TcpIncoming::from` leaves Nagle's algorithm on, unlike tonic's own
            // `Server::serve(addr)` (its `tcp_nodelay` defaults to true): set it as a
            // hand-written tonic server has it, and as rmicro's server does.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tonic::transport::Server::builder()
                .add_service(TonicServer::new(Tonic))
                .serve_with_incoming(incoming)
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
        calls.push(tonic_call(TonicClient::new(channel)));
    }
    closed_loop(&calls, args.concurrency, duration).await
}

/// One `SayHello` from a tonic client; true if it succeeded.
fn tonic_call(client: TonicClient<tonic::transport::Channel>) -> Call {
    std::sync::Arc::new(move || {
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
    })
}

/// One `SayHello` from an rmicro typed client; true if it succeeded.
fn rmicro_call(client: greeter::proto::GreeterClient) -> Call {
    std::sync::Arc::new(move || {
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
    })
}

/// Load from an rmicro typed client.
async fn load_rmicro(
    client: greeter::proto::GreeterClient,
    args: &LoadArgs,
    duration: Duration,
) -> anyhow::Result<Measured> {
    closed_loop(&[rmicro_call(client)], args.concurrency, duration).await
}

/// Drives two rmicro clients in turn (the first alternates each round) and prints
/// each round, with this process's CPU (the client's) per request.
async fn alternate_clients(
    kinds: &[(&str, greeter::proto::GreeterClient); 2],
    args: &LoadArgs,
) -> anyhow::Result<Vec<summary::Series>> {
    let mut series = vec![
        summary::Series::new(kinds[0].0)?,
        summary::Series::new(kinds[1].0)?,
    ];
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let client = &kinds[i].1;
            load_rmicro(client.clone(), args, args.warmup).await?;
            let before = summary::cpu_seconds(std::process::id());
            let m = load_rmicro(client.clone(), args, args.duration).await?;
            let cpu = summary::cpu_per_request(
                before,
                summary::cpu_seconds(std::process::id()),
                m.requests,
            );
            record(&mut series[i], round, &m, cpu)?;
        }
    }
    Ok(series)
}

/// Prints one measured round of a Rust-driven load and adds it to `series`.
fn record(series: &mut summary::Series, round: u32, m: &Measured, cpu: f64) -> anyhow::Result<()> {
    let rps = m.requests as f64 / m.elapsed.as_secs_f64();
    println!(
        "  round {} {:>10}: {:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  CPU {:>6.2} us/req  errors {}",
        round + 1,
        series.kind,
        rps,
        m.latency.value_at_quantile(0.5),
        m.latency.value_at_quantile(0.99),
        cpu,
        m.errors
    );
    series.rps.push(rps);
    series.cpu_us.push(cpu);
    series.errors += m.errors;
    series.latency.add(&m.latency)?;
    Ok(())
}

/// Starts a server and returns it with its address: `tonic`, `rmicro` (no
/// wrappers), `rmicro+N` (N no-op handler wrappers) — all `rmicro-bench serve` —
/// or `greeter`, the shipped greeter binary with its default flags (built next to
/// this one by `cargo build --release -p greeter --bins`), or `greeter+ratelimit`,
/// the same with `--ratelimit-server` set too high to bite (the seed's server line).
fn spawn_server(kind: &str, extra: &[&str]) -> anyhow::Result<(std::process::Child, String)> {
    match kind {
        "greeter" => return spawn_greeter(&[]),
        "greeter+ratelimit" => {
            return spawn_greeter(&["--ratelimit-server", resilience::UNBITING_RATE]);
        }
        "greeter+full" | "greeter+ratio" => {
            let stack = kind.trim_start_matches("greeter+");
            let sink = observability::shared_sink()?;
            let dir =
                std::env::temp_dir().join(format!("rmicro-bench-h2load-{}", std::process::id()));
            // A fresh log each time: its first "Listening on" line is this greeter's.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let flags = observability::flags(stack, &sink, &dir)?;
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            return spawn_greeter(&flags);
        }
        _ => {}
    }
    let (kind, wrappers) = match kind.split_once('+') {
        Some((kind, n)) => (kind, n.to_owned()),
        None => (kind, "0".to_owned()),
    };
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", kind, "--noop-wrappers", &wrappers])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    listening(child, kind)
}

/// The address a server this binary started printed as `LISTENING <address>`.
fn listening(
    mut child: std::process::Child,
    kind: &str,
) -> anyhow::Result<(std::process::Child, String)> {
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

/// The shipped `greeter` binary on a loopback port, its flags otherwise default (plus
/// `extra`); its address comes from its "Listening on" log line.
fn spawn_greeter(extra: &[&str]) -> anyhow::Result<(std::process::Child, String)> {
    spawn_shipped("greeter", "greeter", extra)
}

/// Starts the shipped binary `name` (of package `package`, beside this one) on a
/// free loopback port with `extra` flags; the child and the address it logged.
fn spawn_shipped(
    package: &str,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<(std::process::Child, String)> {
    let exe = std::env::current_exe()?;
    let binary = exe.with_file_name(name);
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: run `cargo build --release -p {package} --bins` first",
        binary.display()
    );
    let mut child = Command::new(&binary)
        .args(["--server-address", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Logging to a file: the address is in the file.
    if let Some(file) = extra
        .iter()
        .position(|f| *f == "--log-file")
        .and_then(|i| extra.get(i + 1))
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Some(address) = text.lines().find_map(|line| {
                let rest = line.split("Listening on ").nth(1)?;
                Some(rest.split(['"', ' ']).next()?.to_owned())
            }) {
                return Ok((child, address));
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{name} did not log its address to {file}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            anyhow::bail!("{name} exited before listening");
        }
        if let Some((_, rest)) = line.split_once("Listening on ") {
            let address = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            // Keep draining its log so it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return Ok((child, address));
        }
    }
}

async fn compare(args: LoadArgs) -> anyhow::Result<()> {
    let kinds: Vec<&str> = args.servers.split(',').collect();
    anyhow::ensure!(
        kinds.first() == Some(&"tonic"),
        "--servers must start with tonic"
    );
    let mut series: Vec<summary::Series> = kinds
        .iter()
        .map(|k| summary::Series::new(k))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "unary SayHello, {} connections, {} in flight, {:?} x {} rounds per server (+{:?} warm-up)",
        args.connections, args.concurrency, args.duration, args.rounds, args.warmup
    );
    for round in 0..args.rounds {
        // Each round starts with another server, so no server always goes first.
        let order: Vec<usize> = (0..kinds.len())
            .map(|i| (i + round as usize) % kinds.len())
            .collect();
        for i in order {
            let (mut child, address) = spawn_server(kinds[i], &[])?;
            let pid = child.id();
            let result = async {
                load(&address, &args, args.warmup).await?;
                let before = summary::cpu_seconds(pid);
                let m = load(&address, &args, args.duration).await?;
                let cpu = summary::cpu_per_request(before, summary::cpu_seconds(pid), m.requests);
                anyhow::Ok((m, cpu))
            }
            .await;
            let _ = child.kill();
            let _ = child.wait();
            let (m, cpu) = result?;
            let rps = m.requests as f64 / m.elapsed.as_secs_f64();
            println!(
                "  round {} {:>9}: {:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  CPU {:>6.2} us/req  errors {}",
                round + 1,
                kinds[i],
                rps,
                m.latency.value_at_quantile(0.50),
                m.latency.value_at_quantile(0.99),
                cpu,
                m.errors
            );
            let s = &mut series[i];
            s.rps.push(rps);
            s.cpu_us.push(cpu);
            s.errors += m.errors;
            s.latency.add(&m.latency)?;
        }
    }
    summary::print(&series);
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
    let result = alternate_clients(&kinds, &args).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let series = result?;
    summary::table(&series, "client", "client");
    println!("\n(target: by-name >= 0.97x of fixed)");
    summary::ratios(&series[1], &series[0]);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every process of this binary logs warnings to stderr, as a hand-written
    // service does. With no subscriber at all, each span hyper, h2, tonic and sqlx
    // open takes the `log` crate's path (sqlx turns on `tracing`'s `log` feature
    // for the whole build): thousands of instructions per call that would slow the
    // peers (tonic, tonic+sqlx, axum) and the load generators, not rmicro. An
    // rmicro server keeps the subscriber its own `build()` installs.
    let rmicro_server = matches!(&cli.command, Some(Cmd::Serve { kind, .. }) if kind == "rmicro");
    if !rmicro_server {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .try_init();
    }
    match cli.command {
        Some(Cmd::Serve {
            kind,
            address,
            registry_dir,
            noop_wrappers,
        }) => serve(&kind, &address, registry_dir, noop_wrappers).await,
        Some(Cmd::H2load(args)) => h2load::run(args).await,
        Some(Cmd::Cli(args)) => cli_bench::run(args).await,
        Some(Cmd::User(args)) => user::run(args).await,
        Some(Cmd::TonicUser { dsn, secret }) => user::serve_tonic(&dsn, &secret).await,
        Some(Cmd::ClientWrappers(args)) => client_wrappers(args).await,
        Some(Cmd::Discovery(args)) => discovery(args).await,
        Some(Cmd::ClientCalls { client, count }) => client_calls(&client, count).await,
        Some(Cmd::Broker(args)) => broker::run(args).await,
        Some(Cmd::Resilience(args)) => resilience::run(args).await,
        Some(Cmd::Observability(args)) => observability::run(args).await,
        Some(Cmd::OtlpSink) => observability::sink().await,
        Some(Cmd::Gateway(args)) => gateway::run(args).await,
        Some(Cmd::AxumGateway { upstream }) => gateway::axum_gateway(&upstream).await,
        Some(Cmd::AxumEcho) => gateway::axum_echo().await,
        Some(Cmd::Compare(args)) => compare(args).await,
        None => compare(LoadArgs::parse_from(["compare"])).await,
    }
}
