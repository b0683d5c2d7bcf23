//! `rmicro bench`: load an endpoint the way ghz does — a number of calls (`-n`) or a
//! duration (`-z`), by so many workers (`-c`) over so many connections
//! (`--connections`), optionally paced (`--rps`) — and report throughput, the
//! latency distribution and how the calls ended.

use rmicro::client::CallOptions;
use rmicro::{Client, Error};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `rmicro bench`'s flags.
#[derive(clap::Args, Clone)]
pub struct BenchFlags {
    /// The service (`greeter`), found through the registry unless `--address` names a server.
    pub service: String,
    /// The endpoint, `Service.Method` (`Greeter.SayHello`) or fully qualified.
    pub endpoint: String,
    /// The request as JSON (the same for every call).
    #[arg(default_value = "{}")]
    pub request: String,
    /// How many calls in all (default 200 unless `-z` is given).
    #[arg(
        short = 'n',
        long = "total",
        value_name = "N",
        conflicts_with = "duration"
    )]
    pub total: Option<u64>,
    /// Run for this long instead of a number of calls (`10s`, `1m`).
    #[arg(short = 'z', long, value_name = "DURATION", value_parser = rmicro::cmd::parse_duration)]
    pub duration: Option<Duration>,
    /// How many calls are in flight at once.
    #[arg(short = 'c', long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// How many connections (per server) the calls share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Start at most this many calls per second in all (default: as fast as they return).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rps: Option<u64>,
    /// `text` (a summary, a histogram and the status distribution) or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Address of the server (`host:port`), skipping the registry.
    #[arg(long, env = "MICRO_CLIENT_ADDRESS")]
    pub address: Option<String>,
    /// How long each call may take.
    #[arg(long, default_value = "5s", value_parser = rmicro::cmd::parse_duration)]
    pub timeout: Duration,
}

/// What the workers measured.
struct Tally {
    latency: hdrhistogram::Histogram<u64>,
    /// Calls by how they ended: `OK` or the gRPC code's name.
    statuses: BTreeMap<String, u64>,
    /// The first detail seen for each failing code.
    details: BTreeMap<String, String>,
}

impl Tally {
    fn new() -> Result<Self, Error> {
        // Microseconds, 1 µs to 1 h, 3 significant digits.
        let latency = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
        Ok(Tally {
            latency,
            statuses: BTreeMap::new(),
            details: BTreeMap::new(),
        })
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (status, detail) in other.details {
            self.details.entry(status).or_insert(detail);
        }
    }
}

/// When the workers stop: after so many calls, or at a moment.
enum Budget {
    Calls(AtomicU64),
    Until(Instant),
}

impl Budget {
    /// Whether one more call may start.
    fn take(&self) -> bool {
        match self {
            Budget::Calls(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            Budget::Until(end) => Instant::now() < *end,
        }
    }
}

/// Starts calls at most `rps` a second in all, shared by the workers.
type Pacer = Arc<tokio::sync::Mutex<tokio::time::Interval>>;

/// The pacer for `--rps` (on the current runtime's timer), if one was asked for.
fn pacer(rps: Option<u64>) -> Option<Pacer> {
    rps.map(|rps| {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rps as f64));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Arc::new(tokio::sync::Mutex::new(interval))
    })
}

/// Runs the benchmark and prints its report.
pub async fn run(
    flags: BenchFlags,
    clients: Vec<Client>,
    registry: &rmicro::registry::SharedRegistry,
) -> Result<(), Error> {
    serde_json::from_str::<serde_json::Value>(&flags.request).map_err(|e| {
        Error::bad_request("rmicro.cli", format!("the request is not valid JSON ({e})"))
    })?;
    // One call first: a wrong address or endpoint is a sentence, not N failures.
    let options = || {
        let options = CallOptions::new().timeout(flags.timeout);
        match &flags.address {
            Some(address) => options.address(address),
            None => options,
        }
    };
    let first =
        clients[0].unary_json(&flags.service, &flags.endpoint, &flags.request, options())?;
    if let Err(err) = first.await
        && err.code != 400
        && err.code != 500
        && err.grpc_code() != rmicro::Code::InvalidArgument
    {
        return Err(Error::unavailable(
            "rmicro.cli",
            format!("the first call failed, so no benchmark: {}", err.detail),
        ));
    }

    let budget = Arc::new(match flags.duration {
        Some(duration) => Budget::Until(Instant::now() + duration),
        None => Budget::Calls(AtomicU64::new(flags.total.unwrap_or(200))),
    });
    let done = Arc::new(AtomicU64::new(0));
    let pacer = pacer(flags.rps);
    let progress = progress_bar(&flags, done.clone());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    // The servers: the one named, or every node of the service in the registry
    // (connections spread over them).
    let servers: Vec<String> = match &flags.address {
        Some(address) => vec![address.clone()],
        None => registry
            .get_service(&flags.service)
            .await
            .map_err(|e| Error::unavailable("rmicro.cli", e.to_string()))?
            .into_iter()
            .flat_map(|r| r.nodes.into_iter().map(|n| n.address))
            .collect(),
    };
    // How the request goes: `protobuf` (from the server's reflection) or `json`.
    let mut encoding = "json";
    if !servers.is_empty() {
        // Plain (h2c) servers: the raw HTTP/2 path.
        // `Service.Method` or `package.Service.Method` → `/package.Service/Method`.
        let path = match flags.endpoint.rsplit_once('.') {
            Some((service, method)) if !service.is_empty() && !method.is_empty() => {
                format!("/{service}/{method}")
            }
            _ => {
                return Err(Error::bad_request(
                    "rmicro.cli",
                    format!("`{}` is not Service.Method", flags.endpoint),
                ));
            }
        };
        // Protobuf, as real clients send, when the server says its messages by
        // reflection; its JSON codec otherwise.
        let (body, content_type) = match rmicro_api::encode_request(
            &clients[0],
            &flags.service,
            &flags.endpoint,
            &flags.request,
            &options(),
        )
        .await
        {
            Ok(protobuf) => {
                encoding = "protobuf";
                (raw::frame(&protobuf), "application/grpc")
            }
            Err(err) => {
                tracing::debug!(error = %err, "no descriptors by reflection: the request goes as JSON");
                (
                    raw::frame(flags.request.as_bytes()),
                    "application/grpc+json",
                )
            }
        };
        let timeout = format!("{}m", flags.timeout.as_millis().max(1));
        let mut uris = Vec::new();
        for address in servers.iter().cycle().take(flags.connections as usize) {
            let uri: http::Uri = format!("http://{address}{path}")
                .parse()
                .map_err(|e| Error::bad_request("rmicro.cli", format!("`{address}`: {e}")))?;
            uris.push((address.clone(), uri));
        }
        let job = raw::Job {
            uris,
            body,
            content_type,
            timeout,
            concurrency: flags.concurrency,
            rps: flags.rps,
            budget: budget.clone(),
            done: done.clone(),
        };
        // One thread drives every connection and call, as h2load does by
        // default: the other core is the server's.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("rmicro-bench".into())
            .spawn(move || {
                let ran = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::internal("rmicro.cli", e.to_string()))
                    .and_then(|runtime| runtime.block_on(raw::run(job)));
                let _ = tx.send(ran);
            })
            .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
        workers.spawn(async move {
            rx.await
                .map_err(|_| Error::internal("rmicro.cli", "the load thread ended early"))?
        });
    }
    // No node found by name (the registry may still route the rmicro client).
    for worker in 0..flags.concurrency * u64::from(servers.is_empty()) {
        let client = clients[(worker % clients.len() as u64) as usize].clone();
        let (budget, done, pacer) = (budget.clone(), done.clone(), pacer.clone());
        let flags = flags.clone();
        let options = options();
        workers.spawn(async move {
            let mut tally = Tally::new()?;
            while budget.take() {
                if let Some(pacer) = &pacer {
                    pacer.lock().await.tick().await;
                }
                let began = Instant::now();
                let call = client.unary_json(
                    &flags.service,
                    &flags.endpoint,
                    &flags.request,
                    options.clone(),
                )?;
                let outcome = call.await;
                let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.latency.saturating_record(micros.max(1));
                let status = match outcome {
                    Ok(_) => "OK".to_owned(),
                    Err(err) => {
                        let code = err.grpc_code().to_string();
                        tally.details.entry(code.clone()).or_insert(err.detail);
                        code
                    }
                };
                *tally.statuses.entry(status).or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(tally)
        });
    }
    let mut tally = Tally::new()?;
    while let Some(joined) = workers.join_next().await {
        let worker = joined.map_err(|e| Error::internal("rmicro.cli", e.to_string()))??;
        tally.merge(worker);
    }
    let elapsed = started.elapsed();
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    if flags.output == "json" {
        println!("{}", json_report(&flags, &tally, elapsed, encoding));
    } else {
        print!("{}", text_report(&flags, &tally, elapsed, encoding));
    }
    Ok(())
}

/// A progress bar on a terminal (text output only), fed by a ticker.
fn progress_bar(
    flags: &BenchFlags,
    done: Arc<AtomicU64>,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if flags.output != "text" || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match flags.duration {
        Some(duration) => indicatif::ProgressBar::new(duration.as_secs().max(1)),
        None => indicatif::ProgressBar::new(flags.total.unwrap_or(200)),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
    ) {
        bar.set_style(style);
    }
    let (shown, by_time, started) = (bar.clone(), flags.duration.is_some(), Instant::now());
    let ticker = tokio::spawn(async move {
        loop {
            let calls = done.load(Ordering::Relaxed);
            if by_time {
                shown.set_position(started.elapsed().as_secs());
                shown.set_message(format!("{calls} calls"));
            } else {
                shown.set_position(calls);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some((bar, ticker))
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
];

fn json_report(
    flags: &BenchFlags,
    tally: &Tally,
    elapsed: Duration,
    encoding: &str,
) -> serde_json::Value {
    let count = tally.latency.len();
    let mut latency = serde_json::Map::new();
    latency.insert("min".into(), millis(tally.latency.min()).into());
    latency.insert("mean".into(), (tally.latency.mean() / 1000.0).into());
    for (name, q) in PERCENTILES {
        latency.insert(
            name.into(),
            millis(tally.latency.value_at_percentile(q)).into(),
        );
    }
    latency.insert("max".into(), millis(tally.latency.max()).into());
    serde_json::json!({
        "service": flags.service,
        "endpoint": flags.endpoint,
        "encoding": encoding,
        "concurrency": flags.concurrency,
        "connections": flags.connections,
        "count": count,
        "total_ms": elapsed.as_secs_f64() * 1000.0,
        "rps": count as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        "latency_ms": latency,
        "histogram": buckets(tally).into_iter().map(|(mark, n)| serde_json::json!({"mark_ms": millis(mark), "count": n})).collect::<Vec<_>>(),
        "statuses": tally.statuses,
        "errors": tally.details,
    })
}

/// Ten buckets from the fastest to the slowest call: (upper mark in µs, calls).
fn buckets(tally: &Tally) -> Vec<(u64, u64)> {
    let (min, max) = (tally.latency.min(), tally.latency.max());
    if tally.latency.is_empty() {
        return Vec::new();
    }
    let step = ((max - min) / 10).max(1);
    let mut marks: Vec<(u64, u64)> = (1..=10).map(|i| (min + step * i, 0)).collect();
    if let Some(last) = marks.last_mut() {
        last.0 = last.0.max(max);
    }
    for value in tally.latency.iter_recorded() {
        let v = value.value_iterated_to();
        let slot = marks
            .iter()
            .position(|(mark, _)| v <= *mark)
            .unwrap_or(marks.len() - 1);
        marks[slot].1 += value.count_at_value();
    }
    marks
}

fn text_report(flags: &BenchFlags, tally: &Tally, elapsed: Duration, encoding: &str) -> String {
    use std::fmt::Write;
    let count = tally.latency.len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nSummary:\n  Request:\t{encoding}\n  Count:\t{count}\n  Total:\t{:.2} ms\n  Slowest:\t{:.2} ms\n  Fastest:\t{:.2} ms\n  Average:\t{:.2} ms\n  Requests/sec:\t{:.2}\n",
        elapsed.as_secs_f64() * 1000.0,
        millis(tally.latency.max()),
        millis(tally.latency.min()),
        tally.latency.mean() / 1000.0,
        count as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
    );
    let _ = writeln!(out, "Response time histogram:");
    let buckets = buckets(tally);
    let widest = buckets.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    for (mark, n) in &buckets {
        let bar = "∎".repeat(((n * 40) / widest) as usize);
        let _ = writeln!(out, "  {:>10.3} [{n}]\t|{bar}", millis(*mark));
    }
    let _ = writeln!(out, "\nLatency distribution:");
    for (name, q) in PERCENTILES {
        let _ = writeln!(
            out,
            "  {name:>6} in {:.2} ms",
            millis(tally.latency.value_at_percentile(q))
        );
    }
    let _ = writeln!(out, "\nStatus code distribution:");
    for (status, n) in &tally.statuses {
        let _ = writeln!(out, "  [{status}]\t{n} responses");
    }
    if !tally.details.is_empty() {
        let _ = writeln!(out, "\nError distribution:");
        for (status, detail) in &tally.details {
            let _ = writeln!(out, "  [{status}]\t{detail}");
        }
    }
    let _ = writeln!(
        out,
        "\n{} workers over {} connection(s){}",
        flags.concurrency,
        flags.connections,
        flags
            .rps
            .map(|r| format!(", paced at {r} calls/s"))
            .unwrap_or_default()
    );
    out
}

/// The raw HTTP/2 path of `rmicro bench` for plain (h2c) servers: the request frame
/// is encoded once and sent with h2 directly, as h2load does, so the generator's
/// cost per call stays far below the server's.
mod raw {
    use super::{Budget, Tally};
    use bytes::Bytes;
    use rmicro::Error;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    /// A gRPC message frame of `message` (uncompressed, length-prefixed).
    pub fn frame(message: &[u8]) -> Bytes {
        let mut framed = Vec::with_capacity(5 + message.len());
        framed.push(0);
        framed.extend_from_slice(
            &u32::try_from(message.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        framed.extend_from_slice(message);
        Bytes::from(framed)
    }

    /// Opens an HTTP/2 connection to `address`.
    pub async fn connect(address: &str) -> Result<h2::client::SendRequest<Bytes>, Error> {
        let unavailable = |e: &dyn std::fmt::Display| {
            Error::unavailable("rmicro.cli", format!("cannot connect to {address}: {e}"))
        };
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| unavailable(&e))?;
        let _ = tcp.set_nodelay(true);
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake(tcp)
            .await
            .map_err(|e| unavailable(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(send)
    }

    /// What every call sends: the path, the framed message and its headers
    /// (content type, `te`, `grpc-timeout`), made once and cloned per call.
    pub struct Call {
        pub uri: http::Uri,
        pub body: Bytes,
        pub headers: http::HeaderMap,
    }

    impl Call {
        /// The call to `uri` with `body`, its content type and `grpc-timeout`.
        pub fn new(
            uri: http::Uri,
            body: Bytes,
            content_type: &'static str,
            timeout: &str,
        ) -> Result<Call, Error> {
            let mut headers = http::HeaderMap::with_capacity(3);
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
            let timeout = http::HeaderValue::from_str(timeout).map_err(|e| {
                Error::bad_request("rmicro.cli", format!("`{timeout}` as grpc-timeout: {e}"))
            })?;
            headers.insert(http::HeaderName::from_static("grpc-timeout"), timeout);
            Ok(Call { uri, body, headers })
        }
    }

    /// One call: `None` when it succeeded, else its gRPC status name and message.
    async fn call(
        send: &mut h2::client::SendRequest<Bytes>,
        what: &Call,
    ) -> Option<(String, Option<String>)> {
        let Call { uri, body, headers } = what;
        let failed =
            |e: &dyn std::fmt::Display| Some(("UNAVAILABLE".to_owned(), Some(e.to_string())));
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        // Ready in place: a cloned `SendRequest` would lock the connection's
        // stream table twice per call (one count up, one down).
        if let Err(e) = std::future::poll_fn(|cx| send.poll_ready(cx)).await {
            return failed(&e);
        }
        let (response, mut stream) = match send.send_request(request, false) {
            Ok(sent) => sent,
            Err(e) => return failed(&e),
        };
        if let Err(e) = stream.send_data(body.clone(), true) {
            return failed(&e);
        }
        let response = match response.await {
            Ok(response) => response,
            Err(e) => return failed(&e),
        };
        let (parts, mut body) = response.into_parts();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Err(e) => return failed(&e),
            }
        }
        let trailers = match body.trailers().await {
            Ok(trailers) => trailers,
            Err(e) => return failed(&e),
        };
        // Trailers, or the headers of a trailers-only answer.
        let fields = trailers.as_ref().unwrap_or(&parts.headers);
        let code = fields
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(rmicro::Code::from_i32);
        match code {
            Some(rmicro::Code::Ok) => None,
            Some(code) => {
                let message = fields
                    .get("grpc-message")
                    .map(|v| {
                        percent_encoding::percent_decode(v.as_bytes())
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                Some((code.to_string(), Some(message)))
            }
            None => Some((
                "UNKNOWN".to_owned(),
                Some(format!("no grpc-status (HTTP {})", parts.status)),
            )),
        }
    }

    /// What the load thread does: the connections, and the calls over them.
    pub struct Job {
        /// A connection each: the server and the call's URI on it.
        pub uris: Vec<(String, http::Uri)>,
        pub body: Bytes,
        pub content_type: &'static str,
        pub timeout: String,
        pub concurrency: u64,
        pub rps: Option<u64>,
        pub budget: Arc<Budget>,
        pub done: Arc<AtomicU64>,
    }

    /// Opens the connections and runs the workers over them (on the current
    /// runtime), then merges what they measured.
    pub async fn run(job: Job) -> Result<Tally, Error> {
        let mut connections = Vec::with_capacity(job.uris.len());
        for (address, uri) in &job.uris {
            let call = Arc::new(Call::new(
                uri.clone(),
                job.body.clone(),
                job.content_type,
                &job.timeout,
            )?);
            connections.push((connect(address).await?, call));
        }
        // This runtime's own timer paces this thread's calls.
        let pacer = super::pacer(job.rps);
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..job.concurrency {
            let (send, call) = connections[(worker % connections.len() as u64) as usize].clone();
            workers.spawn(self::worker(
                send,
                call,
                job.budget.clone(),
                job.done.clone(),
                pacer.clone(),
            ));
        }
        let mut tally = Tally::new()?;
        while let Some(joined) = workers.join_next().await {
            tally.merge(joined.map_err(|e| Error::internal("rmicro.cli", e.to_string()))??);
        }
        Ok(tally)
    }

    /// A worker: calls on `send` while the budget lasts.
    pub async fn worker(
        mut send: h2::client::SendRequest<Bytes>,
        what: Arc<Call>,
        budget: Arc<Budget>,
        done: Arc<AtomicU64>,
        pacer: Option<super::Pacer>,
    ) -> Result<Tally, Error> {
        let mut tally = Tally::new()?;
        // Successes are counted here and entered once: no status text per call.
        let mut ok = 0u64;
        while budget.take() {
            if let Some(pacer) = &pacer {
                pacer.lock().await.tick().await;
            }
            let began = Instant::now();
            let failed = call(&mut send, &what).await;
            let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
            tally.latency.saturating_record(micros.max(1));
            match failed {
                None => ok += 1,
                Some((status, detail)) => {
                    if let Some(detail) = detail {
                        tally.details.entry(status.clone()).or_insert(detail);
                    }
                    *tally.statuses.entry(status).or_default() += 1;
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        if ok > 0 {
            *tally.statuses.entry("OK".to_owned()).or_default() += ok;
        }
        Ok(tally)
    }
}
