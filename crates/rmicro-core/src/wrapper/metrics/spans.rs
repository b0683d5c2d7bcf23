//! The tracing exporter's figures, read when Prometheus scrapes.

use crate::wrapper::trace::ExportStats;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::HashMap;
use std::sync::Arc;

const FAMILIES: [(&str, &str); 3] = [
    (
        "micro_tracing_spans_exported_total",
        "Spans the OTLP collector accepted.",
    ),
    (
        "micro_tracing_spans_failed_total",
        "Spans lost to exports the collector refused or that timed out.",
    ),
    (
        "micro_tracing_spans_dropped_total",
        "Spans dropped because the export queue was full (the collector is slower than the calls).",
    ),
];

/// Reports one service's exporter figures, labelled with its name.
pub(super) struct Spans {
    name: String,
    stats: Arc<ExportStats>,
    descs: Vec<Desc>,
}

impl Spans {
    pub(super) fn new(name: &str, stats: Arc<ExportStats>) -> Result<Self, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|(n, help)| {
                Desc::new(
                    (*n).into(),
                    (*help).into(),
                    vec!["micro_name".into()],
                    HashMap::new(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Spans {
            name: name.to_owned(),
            stats,
            descs,
        })
    }
}

impl Collector for Spans {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = [
            self.stats.exported(),
            self.stats.failed(),
            self.stats.dropped(),
        ];
        FAMILIES
            .iter()
            .zip(values)
            .map(|((name, help), value)| {
                let mut pair = LabelPair::default();
                pair.set_name("micro_name".into());
                pair.set_value(self.name.clone());
                let mut counter = Counter::default();
                counter.set_value(value as f64);
                let mut metric = Metric::default();
                metric.set_label(vec![pair]);
                metric.set_counter(counter);
                let mut family = MetricFamily::default();
                family.set_name((*name).to_owned());
                family.set_help((*help).to_owned());
                family.set_field_type(MetricType::COUNTER);
                family.set_metric(vec![metric]);
                family
            })
            .collect()
    }
}
