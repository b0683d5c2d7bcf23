//! Live numbers from the nodes' `/metrics` (node metadata `metrics`, set by
//! `--metrics-address`): every scrape interval each node's page is read, and the
//! difference from its previous reading gives the service's calls per second,
//! error % and — from the `micro_request_duration_seconds` histogram, the way
//! PromQL's `histogram_quantile` interpolates — p50 and p99.
//!
//! Only the few series the dashboard shows are read, so a small reader of the
//! Prometheus text format (and OpenMetrics', whose samples look the same) stands
//! here instead of a full parser: names, labels with their escapes, values.

use crate::fleet::{Fleet, Sample};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The handled-calls counter, by `micro_status`.
const REQUESTS: &str = "micro_request_total";
/// The handled-calls latency histogram's buckets.
const BUCKETS: &str = "micro_request_duration_seconds_bucket";
/// The most of a metrics page read.
const MAX_PAGE: usize = 8 << 20;

/// What one reading of a node's page says, summed over its endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reading {
    /// Calls handled.
    pub total: f64,
    /// Of those, failed (`micro_status="failure"`).
    pub failures: f64,
    /// Cumulative bucket counts by upper bound (seconds), `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

/// Reads the series the dashboard shows from a Prometheus or OpenMetrics text page.
pub(crate) fn parse(text: &str) -> Reading {
    let mut reading = Reading::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        if name == REQUESTS {
            reading.total += value;
            if label(labels, "micro_status") == Some("failure") {
                reading.failures += value;
            }
        } else if name == BUCKETS
            && let Some(le) = label(labels, "le").and_then(number)
        {
            // The bound's bits order positive floats (and +Inf) as numbers do.
            buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += value;
        }
    }
    reading.buckets = buckets.into_values().collect();
    reading
}

/// `name{labels} value [timestamp]` → its parts (labels without the braces).
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        let close = closing_brace(&line[name_end..])? + name_end;
        (&line[name_end + 1..close], &line[close + 1..])
    } else {
        ("", &line[name_end..])
    };
    let value = rest.split_whitespace().next().and_then(number)?;
    Some((name, labels, value))
}

/// Where the label set opened at `text[0]` closes, skipping quoted values.
fn closing_brace(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The value of label `key` in `a="x",b="y"` (escapes left as they are: the labels
/// read here never hold any).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        if name.trim() == key {
            return Some(&after[..end]);
        }
        rest = after[end + 1..].trim_start_matches([',', ' ']);
    }
    None
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// The `q` quantile (0..1) of a histogram's cumulative bucket counts, as PromQL's
/// `histogram_quantile`: linear within the bucket it falls in; in the `+Inf`
/// bucket, the highest finite bound.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            if count == lower.1 {
                return Some(bound);
            }
            return Some(lower.0 + (bound - lower.0) * (rank - lower.1) / (count - lower.1));
        }
        lower = (bound, count);
    }
    None
}

/// What changed between two readings of one node (a counter that went down means
/// the node restarted: all of the new reading counts).
fn delta(before: &Reading, now: &Reading) -> Reading {
    let restarted = now.total < before.total;
    if restarted {
        return now.clone();
    }
    let old: HashMap<u64, f64> = before
        .buckets
        .iter()
        .map(|(bound, count)| (bound.to_bits(), *count))
        .collect();
    Reading {
        total: now.total - before.total,
        failures: (now.failures - before.failures).max(0.0),
        buckets: now
            .buckets
            .iter()
            .map(|(bound, count)| {
                let was = old.get(&bound.to_bits()).copied().unwrap_or(0.0);
                (*bound, (count - was).max(0.0))
            })
            .collect(),
    }
}

/// A service's sample from its nodes' changes, each over its own interval.
pub(crate) fn sample_of(changes: &[(Reading, Duration)], at_ms: u64) -> Sample {
    let mut rps = 0.0;
    let mut total = 0.0;
    let mut failures = 0.0;
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (change, over) in changes {
        let seconds = over.as_secs_f64().max(0.001);
        rps += change.total / seconds;
        total += change.total;
        failures += change.failures;
        for (bound, count) in &change.buckets {
            buckets.entry(bound.to_bits()).or_insert((*bound, 0.0)).1 += count;
        }
    }
    let buckets: Vec<(f64, f64)> = buckets.into_values().collect();
    let ms = |q| quantile(q, &buckets).map(|s| s * 1000.0);
    Sample {
        at_ms,
        rps,
        error_pct: if total > 0.0 {
            failures * 100.0 / total
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An HTTP/1 client for metrics pages and Hystrix streams (plain `http://`).
pub(crate) type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// A client for the side servers' pages.
pub(crate) fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Reads one metrics page within `timeout`.
async fn fetch(client: &HttpClient, url: &str, timeout: Duration) -> Result<Reading, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    let read = async {
        let response = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_PAGE)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok(parse(&String::from_utf8_lossy(&body)))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("{url}: no page within {timeout:?}"))?
}

/// Reads every node's metrics every `interval` and adds a sample per service.
pub(crate) async fn scrape(fleet: Arc<Fleet>, interval: Duration) {
    let client = http_client();
    let timeout = interval.clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut last: HashMap<String, (Instant, Reading)> = HashMap::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let targets = fleet.node_urls("metrics");
        let reads = targets.into_iter().map(|(service, url)| {
            let client = client.clone();
            async move {
                let result = fetch(&client, &url, timeout).await;
                (service, url, result)
            }
        });
        let results: Vec<_> = futures_util::stream::iter(reads)
            .buffer_unordered(crate::fleet::AT_ONCE)
            .collect()
            .await;
        let now = Instant::now();
        let at_ms = now_ms();
        let mut changes: HashMap<String, Vec<(Reading, Duration)>> = HashMap::new();
        let mut seen = Vec::new();
        for (service, url, result) in results {
            match result {
                Ok(reading) => {
                    if let Some((then, before)) = last.get(&url) {
                        changes
                            .entry(service.clone())
                            .or_default()
                            .push((delta(before, &reading), now - *then));
                    }
                    last.insert(url.clone(), (now, reading));
                    seen.push(url.clone());
                }
                Err(err) => tracing::debug!(%service, error = %err, "cannot read a node's metrics"),
            }
        }
        // Nodes that are gone (or did not answer) start over when they come back.
        last.retain(|url, _| seen.contains(url));
        let window = fleet.history();
        fleet.update(|state| {
            for (service, changes) in &changes {
                let series = state.numbers.entry(service.clone()).or_default();
                series.push_back(sample_of(changes, at_ms));
                let oldest =
                    at_ms.saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
                while series.front().is_some_and(|s| s.at_ms < oldest) {
                    series.pop_front();
                }
            }
            !changes.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP micro_request_total The calls handled, by status.
# TYPE micro_request_total counter
micro_request_total{micro_code="OK",micro_endpoint="Greeter.SayHello",micro_id="g-1",micro_name="greeter",micro_status="success",micro_version="1.0.0"} 90
micro_request_total{micro_code="INVALID_ARGUMENT",micro_endpoint="Greeter.SayHello",micro_id="g-1",micro_name="greeter",micro_status="failure",micro_version="1.0.0"} 10
micro_client_request_total{micro_status="failure"} 1000
micro_request_duration_seconds_bucket{micro_endpoint="Greeter.SayHello",le="0.005"} 50
micro_request_duration_seconds_bucket{micro_endpoint="Greeter.SayHello",le="0.01"} 90
micro_request_duration_seconds_bucket{micro_endpoint="Greeter.SayHello",le="+Inf"} 100
micro_request_duration_seconds_bucket{micro_endpoint="odd \"}\" name",le="0.005"} 0
micro_request_duration_seconds_sum 0.4
"#;

    #[test]
    fn reads_the_handled_calls_and_their_buckets() {
        let reading = parse(PAGE);
        assert_eq!(reading.total, 100.0);
        assert_eq!(reading.failures, 10.0);
        assert_eq!(
            reading.buckets,
            vec![(0.005, 50.0), (0.01, 90.0), (f64::INFINITY, 100.0)]
        );
    }

    #[test]
    fn quantiles_interpolate_as_promql_does() {
        let buckets = [(0.005, 50.0), (0.01, 90.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.005));
        let p80 = quantile(0.8, &buckets).unwrap();
        assert!((p80 - 0.00875).abs() < 1e-9, "{p80}");
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(quantile(0.99, &buckets), Some(0.01));
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn samples_come_from_the_change_between_readings() {
        let before = parse(PAGE);
        let mut now = before.clone();
        now.total += 20.0;
        now.failures += 5.0;
        now.buckets = vec![(0.005, 50.0), (0.01, 110.0), (f64::INFINITY, 120.0)];
        let change = delta(&before, &now);
        assert_eq!(change.total, 20.0);
        let sample = sample_of(&[(change, Duration::from_secs(2))], 7);
        assert_eq!(sample.rps, 10.0);
        assert_eq!(sample.error_pct, 25.0);
        let p50 = sample.p50_ms.unwrap();
        assert!((p50 - 7.5).abs() < 1e-6, "{p50}");
        // A restarted node's counters start again from zero: all of it counts.
        let restarted = Reading {
            total: 3.0,
            failures: 0.0,
            buckets: vec![(f64::INFINITY, 3.0)],
        };
        assert_eq!(delta(&before, &restarted).total, 3.0);
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        let reading = parse(
            "micro_request_total{micro_status=\"failure\" 5\nmicro_request_total oops\nmicro_request_total 2\n",
        );
        assert_eq!(reading.total, 2.0);
        assert_eq!(reading.failures, 0.0);
    }
}
