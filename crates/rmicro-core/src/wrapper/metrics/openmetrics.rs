//! The OpenMetrics text format (`application/openmetrics-text; version=1.0.0`),
//! served when Prometheus asks for it in `Accept`. Written here because the
//! `prometheus` crate encodes only the classic text format; the families are the
//! same, only spelled as OpenMetrics 1.0 spells them: a counter family is named
//! without `_total` and its samples with it, label values and help are escaped,
//! and the page ends with `# EOF`.

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use std::fmt::Write as _;

/// What OpenMetrics pages are served as.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a request's `Accept` asks for OpenMetrics.
pub(super) fn wanted(accept: Option<&http::HeaderValue>) -> bool {
    accept
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"))
}

/// `families` as an OpenMetrics page.
pub(super) fn encode(families: &[MetricFamily]) -> String {
    let mut page = String::new();
    for family in families {
        let kind = family.get_field_type();
        let name = family.name();
        let base = match kind {
            MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let type_name = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "unknown",
        };
        let _ = writeln!(page, "# TYPE {base} {type_name}");
        let _ = writeln!(page, "# HELP {base} {}", escape(family.help(), false));
        for metric in family.get_metric() {
            let labels = metric.get_label();
            match kind {
                MetricType::COUNTER => {
                    let value = metric.get_counter().get_value();
                    sample(&mut page, &format!("{base}_total"), labels, None, value);
                }
                MetricType::GAUGE => {
                    sample(
                        &mut page,
                        base,
                        labels,
                        None,
                        metric.get_gauge().get_value(),
                    );
                }
                // Nothing in rmicro's registry is untyped; the family keeps its
                // TYPE line and the samples are left out rather than guessed.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => histogram(&mut page, base, metric),
                MetricType::SUMMARY => {
                    let summary = metric.get_summary();
                    for q in summary.get_quantile() {
                        let quantile = ("quantile", number(q.quantile()));
                        sample(&mut page, base, labels, Some(quantile), q.value());
                    }
                    let count = summary.sample_count() as f64;
                    sample(&mut page, &format!("{base}_count"), labels, None, count);
                    let sum = summary.sample_sum();
                    sample(&mut page, &format!("{base}_sum"), labels, None, sum);
                }
            }
        }
    }
    page.push_str("# EOF\n");
    page
}

fn histogram(page: &mut String, base: &str, metric: &Metric) {
    let histogram = metric.get_histogram();
    let labels = metric.get_label();
    let mut saw_infinity = false;
    for bucket in histogram.get_bucket() {
        let bound = bucket.upper_bound();
        saw_infinity |= bound.is_infinite();
        let le = ("le", number(bound));
        let count = bucket.cumulative_count() as f64;
        sample(page, &format!("{base}_bucket"), labels, Some(le), count);
    }
    let count = histogram.get_sample_count() as f64;
    if !saw_infinity {
        let le = ("le", "+Inf".to_owned());
        sample(page, &format!("{base}_bucket"), labels, Some(le), count);
    }
    sample(page, &format!("{base}_count"), labels, None, count);
    sample(
        page,
        &format!("{base}_sum"),
        labels,
        None,
        histogram.get_sample_sum(),
    );
}

fn sample(
    page: &mut String,
    name: &str,
    labels: &[LabelPair],
    extra: Option<(&str, String)>,
    value: f64,
) {
    page.push_str(name);
    let mut pairs: Vec<(&str, String)> = labels
        .iter()
        .map(|l| (l.name(), escape(l.value(), true)))
        .collect();
    if let Some((name, value)) = extra {
        pairs.push((name, value));
    }
    if !pairs.is_empty() {
        page.push('{');
        for (i, (name, value)) in pairs.iter().enumerate() {
            if i > 0 {
                page.push(',');
            }
            let _ = write!(page, "{name}=\"{value}\"");
        }
        page.push('}');
    }
    let _ = writeln!(page, " {}", number(value));
}

/// A number as OpenMetrics writes it: `+Inf`, `-Inf`, `NaN`, integers without a
/// fraction, other floats in full.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// Escapes `\`, newlines and (in label values) `"`.
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}
