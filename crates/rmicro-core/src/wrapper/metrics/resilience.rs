//! The resilience wrappers' figures, read when Prometheus scrapes (nothing on the
//! calls' path): each circuit breaker's state and calls by outcome, and the calls
//! rate limits and load shedding refused — for every one alive in the process, as
//! the Hystrix stream shows every circuit.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::{BTreeMap, HashMap};

/// One family this collector can report.
struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    kind: MetricType,
}

const FAMILIES: [Family; 6] = [
    Family {
        name: "micro_breaker_open",
        help: "Whether the circuit fails calls fast now (1: open or half-open).",
        labels: &["command"],
        kind: MetricType::GAUGE,
    },
    Family {
        name: "micro_breaker_calls_total",
        help: "The breaker's calls since its circuit was made, by what happened to them.",
        labels: &["command", "event"],
        kind: MetricType::COUNTER,
    },
    Family {
        name: "micro_breaker_in_flight",
        help: "The calls running through the circuit now.",
        labels: &["command"],
        kind: MetricType::GAUGE,
    },
    Family {
        name: "micro_ratelimit_rejected_total",
        help: "Calls a rate limit refused.",
        labels: &["limit", "scope"],
        kind: MetricType::COUNTER,
    },
    Family {
        name: "micro_shed_rejected_total",
        help: "Calls load shedding refused (--server-max-concurrent).",
        labels: &["max"],
        kind: MetricType::COUNTER,
    },
    Family {
        name: "micro_shed_in_flight",
        help: "The calls in flight under a load-shedding limit.",
        labels: &["max"],
        kind: MetricType::GAUGE,
    },
];

/// Collects the resilience wrappers' figures at scrape time.
pub(super) struct Resilience {
    descs: Vec<Desc>,
}

impl Resilience {
    pub(super) fn new() -> Result<Self, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.into(),
                    f.help.into(),
                    f.labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Resilience { descs })
    }
}

/// Values by label values, summed where several wrappers share them.
type Series = BTreeMap<Vec<String>, f64>;

fn family(index: usize, series: Series) -> Option<MetricFamily> {
    if series.is_empty() {
        return None;
    }
    let f = &FAMILIES[index];
    let metrics = series
        .into_iter()
        .map(|(values, value)| {
            let mut metric = Metric::default();
            metric.set_label(
                f.labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name((*name).to_owned());
                        pair.set_value(value);
                        pair
                    })
                    .collect(),
            );
            if f.kind == MetricType::COUNTER {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            } else {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(f.name.to_owned());
    family.set_help(f.help.to_owned());
    family.set_field_type(f.kind);
    family.set_metric(metrics);
    Some(family)
}

impl Collector for Resilience {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut series: [Series; 6] = Default::default();
        for circuit in crate::wrapper::breaker::all_circuits() {
            let command = circuit.name.clone();
            let open = series[0].entry(vec![command.clone()]).or_default();
            *open = open.max(f64::from(u8::from(circuit.open)));
            let t = &circuit.totals;
            for (event, count) in [
                ("success", t.successes),
                ("failure", t.failures),
                ("timeout", t.timeouts),
                ("rejected", t.rejected),
                ("short_circuited", t.short_circuited),
            ] {
                *series[1]
                    .entry(vec![command.clone(), event.to_owned()])
                    .or_default() += count as f64;
            }
            *series[2].entry(vec![command]).or_default() += f64::from(circuit.in_flight);
        }
        for (limit, scope, refused) in crate::wrapper::ratelimit::refusals() {
            *series[3].entry(vec![limit, scope.to_owned()]).or_default() += refused as f64;
        }
        for (max, in_flight, refused) in crate::wrapper::shed::refusals() {
            *series[4].entry(vec![max.to_string()]).or_default() += refused as f64;
            *series[5].entry(vec![max.to_string()]).or_default() += in_flight as f64;
        }
        series
            .into_iter()
            .enumerate()
            .filter_map(|(index, series)| family(index, series))
            .collect()
    }
}
