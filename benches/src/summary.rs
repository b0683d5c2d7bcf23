//! What `compare` and `h2load` print after their rounds: per server the mean
//! throughput, merged latency quantiles and the server process's CPU time per
//! request; then ratios against tonic and against the bare rmicro server, each as
//! the ratio of the means and as the median (and range) of the rounds' paired
//! ratios — on a shared machine single rounds swing, and a pair run back to back
//! shares the machine's state.

use hdrhistogram::Histogram;

/// One server's results over the rounds.
pub struct Series {
    /// Its name in `--servers`.
    pub kind: String,
    /// Requests/s, per round.
    pub rps: Vec<f64>,
    /// Server CPU (user + system) µs per request, per round.
    pub cpu_us: Vec<f64>,
    /// Latency of every round, merged.
    pub latency: Histogram<u64>,
    /// Failed requests, all rounds.
    pub errors: u64,
}

impl Series {
    /// An empty series for `kind`.
    pub fn new(kind: &str) -> anyhow::Result<Self> {
        Ok(Series {
            kind: kind.to_owned(),
            rps: Vec::new(),
            cpu_us: Vec::new(),
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
        })
    }
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat` (Linux; clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU µs per request from two [`cpu_seconds`] readings around `requests`.
pub fn cpu_per_request(before: Option<f64>, after: Option<f64>, requests: u64) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) if requests > 0 => (a - b) * 1e6 / requests as f64,
        _ => f64::NAN,
    }
}

/// The mean of `v` (NaN-free input), 0 when empty.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Median, lowest and highest of `a[i] / b[i]`.
fn paired(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    r.sort_by(f64::total_cmp);
    match (r.first(), r.last()) {
        (Some(&lo), Some(&hi)) => (r[r.len() / 2], lo, hi),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// Prints `a / b`: throughput (mean, and median and range of the rounds), latency
/// quantiles and CPU per request.
pub fn ratios(a: &Series, b: &Series) {
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    let (median, lo, hi) = paired(&a.rps, &b.rps);
    println!(
        "{} / {}: throughput {:.3}x (rounds: median {:.3}x, {:.3}-{:.3}), p50 {:.3}x, p99 {:.3}x, CPU/request {:.3}x",
        a.kind,
        b.kind,
        mean(&a.rps) / mean(&b.rps),
        median,
        lo,
        hi,
        q(&a.latency, 0.5) / q(&b.latency, 0.5),
        q(&a.latency, 0.99) / q(&b.latency, 0.99),
        mean(&a.cpu_us) / mean(&b.cpu_us),
    );
}

/// Prints one line per series; `whose` says whose CPU is counted.
pub fn table(series: &[Series], first: &str, whose: &str) {
    println!(
        "\n{:<10} {:>10} {:>9} {:>9} {:>12} {:>7}",
        first,
        "req/s",
        "p50 us",
        "p99 us",
        format!("{whose} CPU us"),
        "errors"
    );
    for s in series {
        println!(
            "{:<10} {:>10.0} {:>9} {:>9} {:>12.2} {:>7}",
            s.kind,
            mean(&s.rps),
            s.latency.value_at_quantile(0.5),
            s.latency.value_at_quantile(0.99),
            mean(&s.cpu_us),
            s.errors
        );
    }
}

/// Prints the table (server CPU per request) and the ratios; `series[0]` is tonic.
pub fn print(series: &[Series]) {
    table(series, "server", "server");
    println!();
    for s in series.iter().skip(1) {
        ratios(s, &series[0]);
    }
    // Wrappers and shipped defaults against the bare rmicro server.
    if let Some(bare) = series.iter().find(|s| s.kind == "rmicro") {
        for s in series.iter().skip(1).filter(|s| s.kind != "rmicro") {
            ratios(s, bare);
        }
    }
    // A shipped binary with more flags against the shipped defaults.
    if let Some(shipped) = series.iter().find(|s| s.kind == "greeter") {
        for s in series.iter().filter(|s| s.kind.starts_with("greeter+")) {
            ratios(s, shipped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratios_and_cpu_of_this_process() {
        assert_eq!(paired(&[2.0, 3.0, 8.0], &[1.0, 3.0, 2.0]), (2.0, 1.0, 4.0));
        let now = cpu_seconds(std::process::id()).expect("a Linux /proc");
        assert!(now >= 0.0);
        assert!(cpu_per_request(None, Some(1.0), 10).is_nan());
        assert_eq!(cpu_per_request(Some(1.0), Some(1.5), 1000), 500.0);
    }
}
