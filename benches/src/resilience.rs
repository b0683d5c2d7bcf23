//! `rmicro-bench resilience`: what the seed's resilience stack costs.
//!
//! End to end, in the same run: the shipped `greeter` binary with its default flags
//! called by name with no wrappers (random selection), against the seed's three
//! lines — a client with `Breaker::hystrix()` and round-robin selection calling a
//! `greeter --ratelimit-server N` with N high enough never to bite — alternating per
//! round; throughput, p50/p99 and the CPU per request of client and server together.
//!
//! Then each wrapper alone, in ns per call: the layer around a service that answers
//! at once, minus that service alone, called in a loop (and selection by strategy).

use crate::summary::{self, Series};
use crate::{LoadArgs, load_rmicro, record, spawn_greeter};
use http_body_util::BodyExt;
use rmicro::selector::{SelectOptions, Selector, Strategy};
use rmicro::transport::Body;
use rmicro::wrapper::breaker::{BreakerLayer, Settings};
use rmicro::wrapper::ratelimit::{RateLimit, Scope};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::{BoxError, Layer, Service, ServiceExt};

/// Options of `rmicro-bench resilience`.
#[derive(clap::Parser, Clone)]
pub struct ResilienceArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Calls per measurement of one wrapper alone.
    #[arg(long, default_value_t = 200_000)]
    iterations: u32,
    /// Only the per-wrapper costs (no servers).
    #[arg(long)]
    wrappers_only: bool,
    /// Stacks to compare end to end, `none` first: none, seed, breaker,
    /// roundrobin, ratelimit.
    #[arg(long, default_value = "none,seed")]
    stacks: String,
}

/// A rate that never bites under this load.
pub const UNBITING_RATE: &str = "100000000";

/// Runs `rmicro-bench resilience`.
pub async fn run(args: ResilienceArgs) -> anyhow::Result<()> {
    if !args.wrappers_only {
        end_to_end(&args).await?;
        println!();
    }
    per_wrapper(args.iterations).await
}

/// The seed's breaker: hystrix-go's settings, its concurrency cap raised so that
/// the benchmark's calls in flight are not refused (hystrix-go's 10 would refuse
/// most of them: that is the cap doing its job, not a cost).
fn seed_breaker(in_flight: usize) -> BreakerLayer {
    BreakerLayer::new(Settings {
        max_concurrent_requests: u32::try_from(in_flight * 4).unwrap_or(u32::MAX),
        ..Settings::default()
    })
}

/// One stack of the end-to-end comparison: the client's wrappers and selection,
/// and the greeter's extra flags.
struct Stack {
    name: &'static str,
    breaker: bool,
    strategy: Strategy,
    ratelimit: bool,
}

fn stack(name: &str) -> anyhow::Result<Stack> {
    let (name, breaker, strategy, ratelimit) = match name {
        "none" => ("none", false, Strategy::Random, false),
        "seed" => ("seed", true, Strategy::RoundRobin, true),
        "breaker" => ("breaker", true, Strategy::Random, false),
        "roundrobin" => ("roundrobin", false, Strategy::RoundRobin, false),
        "ratelimit" => ("ratelimit", false, Strategy::Random, true),
        other => {
            anyhow::bail!("unknown stack `{other}`: none, seed, breaker, roundrobin or ratelimit")
        }
    };
    Ok(Stack {
        name,
        breaker,
        strategy,
        ratelimit,
    })
}

async fn end_to_end(args: &ResilienceArgs) -> anyhow::Result<()> {
    let load = &args.load;
    let stacks: Vec<Stack> = args
        .stacks
        .split(',')
        .map(stack)
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        stacks.first().is_some_and(|s| s.name == "none") && stacks.len() > 1,
        "--stacks must start with none and name another"
    );
    let base = std::env::temp_dir().join(format!("rmicro-bench-resilience-{}", std::process::id()));
    // One greeter per stack, each in its own registry directory.
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let result = async {
        for (i, s) in stacks.iter().enumerate() {
            let dir = base.join(i.to_string());
            let dir_text = dir.display().to_string();
            let mut flags = vec!["--registry", "local", "--registry-address", &dir_text];
            if s.ratelimit {
                flags.extend(["--ratelimit-server", UNBITING_RATE]);
            }
            let (child, _) = spawn_greeter(&flags)?;
            servers.push(child);
            let mut options = rmicro::client::ClientOptions::default();
            if s.breaker {
                options = options.wrap_client(seed_breaker(load.concurrency));
            }
            let registry: rmicro::registry::SharedRegistry =
                Arc::new(rmicro::registry::LocalRegistry::new(&dir));
            let selector = Arc::new(Selector::new(registry, s.strategy));
            clients.push(greeter::proto::GreeterClient::new(
                "greeter",
                rmicro::Client::with_selector(options, selector),
            ));
        }
        println!(
            "unary SayHello by name to the shipped greeter, {} in flight, {:?} x {} rounds (+{:?} warm-up)",
            load.concurrency, load.duration, load.rounds, load.warmup
        );
        println!(
            "  none: no wrappers, random selection, `greeter` (default flags)\n  \
             seed: Breaker::hystrix() + round-robin, `greeter --ratelimit-server {UNBITING_RATE}`\n  \
             breaker / roundrobin / ratelimit: one of the three alone"
        );
        let mut series: Vec<Series> = stacks
            .iter()
            .map(|s| Series::new(s.name))
            .collect::<anyhow::Result<_>>()?;
        for round in 0..load.rounds {
            // Each round starts with another stack.
            for i in (0..stacks.len()).map(|i| (i + round as usize) % stacks.len()) {
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
        println!("\n(targets for seed: throughput >= 0.95x, p99 <= 1.1x)");
        for s in &series[1..] {
            summary::ratios(s, &series[0]);
        }
        anyhow::Ok(())
    }
    .await;
    for child in &mut servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// A request as a server's handler stack or a client's channel sees it.
fn request() -> http::Request<Body> {
    let mut request = http::Request::new(Body::empty());
    *request.uri_mut() = http::Uri::from_static("http://127.0.0.1/greeter.v1.Greeter/SayHello");
    request
        .headers_mut()
        .insert("x-user-id", http::HeaderValue::from_static("ann"));
    request
}

/// A service that answers OK at once (a trailers-only response).
#[derive(Clone)]
struct Answer;

impl Service<http::Request<Body>> for Answer {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<http::Response<Body>, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        let mut response = http::Response::new(Body::empty());
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        std::future::ready(Ok(response))
    }
}

/// Median ns per call of `service` over 5 runs of `iterations` calls, each call's
/// response body read to its end (where wrappers see the status).
async fn ns_per_call<S>(mut service: S, iterations: u32) -> anyhow::Result<f64>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
{
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..iterations {
            let ready = service
                .ready()
                .await
                .map_err(|e| anyhow::anyhow!(e.into()))?;
            let response = ready
                .call(request())
                .await
                .map_err(|e| anyhow::anyhow!(e.into()))?;
            let status = response.headers().get("grpc-status").cloned();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(
                status.as_ref().is_some_and(|s| s == "0"),
                "a wrapper refused the call: grpc-status {status:?}"
            );
        }
        runs.push(started.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}

/// Median ns per `select` of `strategy` over three nodes.
async fn ns_per_select(strategy: Strategy, iterations: u32) -> anyhow::Result<f64> {
    let registry = Arc::new(rmicro::registry::MemoryRegistry::new());
    for i in 0..3 {
        use rmicro::registry::Registry as _;
        let service = rmicro::registry::Service {
            name: "greeter".into(),
            version: "1.0.0".into(),
            nodes: vec![rmicro::registry::Node {
                id: format!("greeter-{i}"),
                address: format!("127.0.0.1:{}", 9000 + i),
                metadata: Default::default(),
            }],
            ..Default::default()
        };
        registry
            .register(&service, Duration::from_secs(600))
            .await?;
    }
    let selector = Selector::new(registry, strategy);
    let options = SelectOptions::default();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..iterations {
            drop(selector.select("greeter", &options).await?);
        }
        runs.push(started.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}

async fn per_wrapper(iterations: u32) -> anyhow::Result<()> {
    let limit = u32::MAX / 2;
    let bare = ns_per_call(Answer, iterations).await?;
    println!(
        "each wrapper alone, median of 5 x {iterations} calls (ns per call, the bare service subtracted)"
    );
    println!("  {:<48} {:>8.0} ns  (the baseline)", "no wrapper", bare);
    let cases: Vec<(&str, f64)> = vec![
        (
            "breaker (Breaker::hystrix), client",
            ns_per_call(seed_breaker(64).layer(Answer), iterations).await?,
        ),
        (
            "rate limit, global (RateLimit::per_second)",
            ns_per_call(RateLimit::per_second(limit).layer(Answer), iterations).await?,
        ),
        (
            "rate limit, per endpoint",
            ns_per_call(
                RateLimit::per_second(limit)
                    .scope(Scope::PerEndpoint)
                    .layer(Answer),
                iterations,
            )
            .await?,
        ),
        (
            "rate limit, per metadata key (x-user-id)",
            ns_per_call(
                RateLimit::per_second(limit)
                    .scope(Scope::PerMetadata("x-user-id".into()))
                    .layer(Answer),
                iterations,
            )
            .await?,
        ),
        (
            "load shedding (--server-max-concurrent)",
            ns_per_call(
                rmicro::wrapper::shed::LoadShedLayer::max_concurrent(1 << 20).layer(Answer),
                iterations,
            )
            .await?,
        ),
        (
            "endpoint timeout (--server-endpoint-timeout)",
            ns_per_call(
                rmicro::wrapper::timeout::EndpointTimeouts::new()
                    .endpoint("Greeter.SayHello", Duration::from_secs(5))
                    .layer(Answer),
                iterations,
            )
            .await?,
        ),
    ];
    for (name, ns) in cases {
        println!("  {name:<48} {:>8.0} ns", ns - bare);
    }
    let random = ns_per_select(Strategy::Random, iterations).await?;
    let round_robin = ns_per_select(Strategy::RoundRobin, iterations).await?;
    println!("selection over 3 nodes (ns per select)");
    println!("  {:<48} {:>8.0} ns", "random (the default)", random);
    println!(
        "  {:<48} {:>8.0} ns  ({:+.0} ns against random)",
        "round robin",
        round_robin,
        round_robin - random
    );
    Ok(())
}
