//! The pages: views built from the fleet's state, rendered by minijinja templates
//! compiled into the binary. Template names end in `.html`, so minijinja escapes
//! every value they print (`<`, `>`, `&`, `"`, `'`, `/`): a service name or a
//! metadata value from the registry is text on the page, never markup or script.
//! Charts are inline SVG whose coordinates are numbers computed here.

use crate::fleet::{Circuit, Sample, State, health_of};
use crate::{BROKER_PREFIX, call};
use rmicro::client::HealthStatus;
use rmicro::registry::{Service, Value};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The chart's drawing area, in SVG units.
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 120.0;

/// The templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("services.html", include_str!("../templates/services.html")),
    (
        "services_live.html",
        include_str!("../templates/services_live.html"),
    ),
    ("service.html", include_str!("../templates/service.html")),
    (
        "service_live.html",
        include_str!("../templates/service_live.html"),
    ),
    ("topics.html", include_str!("../templates/topics.html")),
    (
        "topics_live.html",
        include_str!("../templates/topics_live.html"),
    ),
    ("circuits.html", include_str!("../templates/circuits.html")),
    (
        "circuits_live.html",
        include_str!("../templates/circuits_live.html"),
    ),
    ("missing.html", include_str!("../templates/missing.html")),
];

/// The template environment (every template checked when the dashboard starts).
pub(crate) fn environment() -> Result<minijinja::Environment<'static>, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.add_filter("segment", segment);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// What a URL path segment may hold as it is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `segment` filter: `text` as one URL path segment (a `/` in a service name
/// stays inside the segment).
fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// Renders `template` with `context`; a template fault is a page that says so.
pub(crate) fn render(
    env: &minijinja::Environment<'static>,
    template: &str,
    context: impl Serialize,
) -> String {
    match env
        .get_template(template)
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
    {
        Ok(html) => html,
        Err(err) => {
            tracing::error!(template, error = %err, "a dashboard template failed");
            "<p class=\"error\">This part of the page could not be drawn; the dashboard's log says why.</p>".to_owned()
        }
    }
}

/// A node as the pages show it.
#[derive(Debug, Serialize)]
pub(crate) struct NodeView {
    id: String,
    address: String,
    version: String,
    health: &'static str,
    /// `ok`, `bad` or `unknown`: the badge's colour.
    tone: &'static str,
    detail: String,
    metadata: Vec<(String, String)>,
}

/// A service's latest numbers and their chart.
#[derive(Debug, Serialize)]
pub(crate) struct NumbersView {
    rps: String,
    error_pct: String,
    p50: String,
    p99: String,
    chart: ChartView,
}

/// A chart: polylines' points (`x,y x,y`) and shaded spans, in a 600×120 box.
#[derive(Debug, Serialize, Default)]
pub(crate) struct ChartView {
    /// The first line (calls per second, scaled to `top`).
    line: String,
    /// The second line (error %, scaled to 100).
    errors: String,
    /// `(x, width)` of spans to shade (a circuit's open spells).
    spans: Vec<(String, String)>,
    /// The first line's top value, for its label.
    top: String,
    /// How many minutes the chart spans.
    minutes: u64,
}

/// A row of the services table.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceRow {
    name: String,
    versions: Vec<String>,
    nodes: Vec<NodeView>,
    serving: usize,
    numbers: Option<NumbersView>,
    open_circuits: usize,
}

/// A circuit as the pages show it.
#[derive(Debug, Serialize)]
pub(crate) struct CircuitView {
    name: String,
    group: String,
    open: bool,
    error_pct: String,
    requests: u64,
    source: String,
    chart: ChartView,
}

/// A subscriber of a topic.
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SubscriberView {
    service: String,
    version: String,
    /// The queue group (each message to one member), empty for none.
    queue: String,
    nodes: usize,
    /// How it is known: `service` (a subscriber endpoint in its registry record)
    /// or `http broker` (the embedded broker's subscription record).
    via: &'static str,
}

/// A topic and who listens to it.
#[derive(Debug, Serialize)]
pub(crate) struct TopicView {
    topic: String,
    subscribers: Vec<SubscriberView>,
}

/// An endpoint with its field trees and its call form's request.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointView {
    name: String,
    stream: bool,
    request_type: String,
    response_type: String,
    request: Vec<FieldLine>,
    response: Vec<FieldLine>,
    skeleton: String,
    /// The request box's height in lines.
    rows: usize,
}

/// A line of a field tree.
#[derive(Debug, Serialize)]
pub(crate) struct FieldLine {
    depth: usize,
    name: String,
    kind: String,
}

fn tone(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Serving => "ok",
        HealthStatus::Unknown => "unknown",
        _ => "bad",
    }
}

fn nodes(state: &State, records: &[Service]) -> Vec<NodeView> {
    records
        .iter()
        .flat_map(|record| {
            record.nodes.iter().map(move |node| {
                let broker_record = record.name.starts_with(BROKER_PREFIX);
                let (status, detail) = health_of(state, &node.id);
                let (health, tone) = if broker_record {
                    ("—", "unknown")
                } else if detail.is_none() {
                    ("CHECKING", "unknown")
                } else {
                    (status.as_str(), tone(status))
                };
                NodeView {
                    id: node.id.clone(),
                    address: node.address.clone(),
                    version: record.version.clone(),
                    health,
                    tone,
                    detail: detail.unwrap_or_default().to_owned(),
                    metadata: node
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                }
            })
        })
        .collect()
}

fn format_number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn format_ms(value: Option<f64>) -> String {
    match value {
        Some(ms) if ms < 1.0 => format!("{:.0} µs", ms * 1000.0),
        Some(ms) => format!("{} ms", format_number(ms)),
        None => "—".to_owned(),
    }
}

/// Where time `at_ms` falls on a chart ending at `end_ms` and spanning `window`.
fn x_of(at_ms: u64, end_ms: u64, window: Duration) -> f64 {
    let span = window.as_millis().max(1) as f64;
    let back = end_ms.saturating_sub(at_ms) as f64;
    (CHART_W * (1.0 - back / span)).clamp(0.0, CHART_W)
}

fn points(values: impl Iterator<Item = (f64, f64)>) -> String {
    values
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn numbers(
    series: &std::collections::VecDeque<Sample>,
    window: Duration,
    end_ms: u64,
) -> Option<NumbersView> {
    let last = series.back()?;
    let top = series.iter().map(|s| s.rps).fold(0.0, f64::max).max(1.0);
    let y = |value: f64, max: f64| CHART_H - (value / max).clamp(0.0, 1.0) * (CHART_H - 4.0) - 2.0;
    Some(NumbersView {
        rps: format_number(last.rps),
        error_pct: format!("{:.1}", last.error_pct),
        p50: format_ms(last.p50_ms),
        p99: format_ms(last.p99_ms),
        chart: ChartView {
            line: points(
                series
                    .iter()
                    .map(|s| (x_of(s.at_ms, end_ms, window), y(s.rps, top))),
            ),
            errors: points(
                series
                    .iter()
                    .map(|s| (x_of(s.at_ms, end_ms, window), y(s.error_pct, 100.0))),
            ),
            spans: Vec::new(),
            top: format_number(top),
            minutes: window.as_secs().div_ceil(60),
        },
    })
}

fn circuit_view(name: &str, circuit: &Circuit, window: Duration, end_ms: u64) -> CircuitView {
    let y = |pct: f64| CHART_H - (pct / 100.0).clamp(0.0, 1.0) * (CHART_H - 4.0) - 2.0;
    let mut spans = Vec::new();
    let mut opened: Option<u64> = None;
    for (at, open, _) in &circuit.history {
        match (open, opened) {
            (true, None) => opened = Some(*at),
            (false, Some(from)) => {
                spans.push((from, *at));
                opened = None;
            }
            _ => {}
        }
    }
    if let Some(from) = opened {
        spans.push((from, end_ms));
    }
    CircuitView {
        name: name.to_owned(),
        group: circuit.group.clone(),
        open: circuit.open,
        error_pct: format!("{:.1}", circuit.error_pct),
        requests: circuit.requests,
        source: circuit.source.clone(),
        chart: ChartView {
            line: String::new(),
            errors: points(
                circuit
                    .history
                    .iter()
                    .map(|(at, _, pct)| (x_of(*at, end_ms, window), y(*pct))),
            ),
            spans: spans
                .into_iter()
                .map(|(from, to)| {
                    let x = x_of(from, end_ms, window);
                    let width = (x_of(to, end_ms, window) - x).max(2.0);
                    (format!("{x:.1}"), format!("{width:.1}"))
                })
                .collect(),
            top: String::new(),
            minutes: window.as_secs().div_ceil(60),
        },
    }
}

/// The services table.
pub(crate) fn services(state: &State, window: Duration, end_ms: u64) -> Vec<ServiceRow> {
    state
        .services
        .iter()
        .filter(|(name, _)| !name.starts_with(BROKER_PREFIX))
        .map(|(name, records)| service_row(state, name, records, window, end_ms))
        .collect()
}

/// Service `name`'s row of the services table.
fn service_row(
    state: &State,
    name: &str,
    records: &[Service],
    window: Duration,
    end_ms: u64,
) -> ServiceRow {
    let nodes = nodes(state, records);
    let mut versions: Vec<String> = records.iter().map(|r| r.version.clone()).collect();
    versions.dedup();
    ServiceRow {
        name: name.to_owned(),
        versions,
        serving: nodes.iter().filter(|n| n.tone == "ok").count(),
        nodes,
        numbers: state
            .numbers
            .get(name)
            .and_then(|series| numbers(series, window, end_ms)),
        open_circuits: state
            .circuits
            .values()
            .filter(|c| c.open && c.group == name)
            .count(),
    }
}

/// The circuits, all or those guarding calls to `group`.
pub(crate) fn circuits(
    state: &State,
    group: Option<&str>,
    window: Duration,
    end_ms: u64,
) -> Vec<CircuitView> {
    state
        .circuits
        .iter()
        .filter(|(_, c)| group.is_none_or(|g| c.group == g))
        .map(|(name, c)| circuit_view(name, c, window, end_ms))
        .collect()
}

/// The live part of a service's page: its row (nodes, numbers) and circuits.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceLive {
    found: bool,
    row: Option<ServiceRow>,
    circuits: Vec<CircuitView>,
}

/// The live part of service `name`'s page.
pub(crate) fn service_live(
    state: &State,
    name: &str,
    window: Duration,
    end_ms: u64,
) -> ServiceLive {
    let row = state
        .services
        .get(name)
        .filter(|_| !name.starts_with(BROKER_PREFIX))
        .map(|records| service_row(state, name, records, window, end_ms));
    ServiceLive {
        found: row.is_some(),
        row,
        circuits: circuits(state, Some(name), window, end_ms),
    }
}

fn tree(message: &Value, depth: usize, out: &mut Vec<FieldLine>) {
    for field in &message.values {
        out.push(FieldLine {
            depth,
            name: field.name.clone(),
            kind: field.kind.clone(),
        });
        tree(field, depth + 1, out);
    }
}

/// The endpoints of service `name`'s records (subscribers apart), each once.
pub(crate) fn endpoints(records: &[Service]) -> Vec<EndpointView> {
    let mut seen = std::collections::BTreeSet::new();
    records
        .iter()
        .flat_map(|r| r.endpoints.iter())
        .filter(|e| e.metadata.get("subscriber").is_none_or(|s| s != "true"))
        .filter(|e| seen.insert(e.name.clone()))
        .map(|e| {
            let mut request = Vec::new();
            let mut response = Vec::new();
            if let Some(message) = &e.request {
                tree(message, 0, &mut request);
            }
            if let Some(message) = &e.response {
                tree(message, 0, &mut response);
            }
            let skeleton = e
                .request
                .as_ref()
                .map_or_else(|| "{}".to_owned(), call::skeleton);
            EndpointView {
                name: e.name.clone(),
                stream: e.metadata.get("stream").is_some_and(|s| s == "true"),
                request_type: e
                    .request
                    .as_ref()
                    .map(|m| m.kind.clone())
                    .unwrap_or_default(),
                response_type: e
                    .response
                    .as_ref()
                    .map(|m| m.kind.clone())
                    .unwrap_or_default(),
                request,
                response,
                rows: skeleton.lines().count().clamp(3, 20),
                skeleton,
            }
        })
        .collect()
}

/// Every topic with its subscribers: subscriber endpoints in services' records
/// (every broker) and the embedded HTTP broker's own subscription records.
pub(crate) fn topics(state: &State, only_service: Option<&str>) -> Vec<TopicView> {
    let mut topics: BTreeMap<String, Vec<SubscriberView>> = BTreeMap::new();
    for (name, records) in &state.services {
        if let Some(topic) = name.strip_prefix(BROKER_PREFIX) {
            if only_service.is_some() {
                continue;
            }
            let mut groups: BTreeMap<String, usize> = BTreeMap::new();
            for node in records.iter().flat_map(|r| r.nodes.iter()) {
                let queue = node.metadata.get("queue").cloned().unwrap_or_default();
                *groups.entry(queue).or_default() += 1;
            }
            for (queue, nodes) in groups {
                topics
                    .entry(topic.to_owned())
                    .or_default()
                    .push(SubscriberView {
                        service: "(http broker)".to_owned(),
                        version: String::new(),
                        queue,
                        nodes,
                        via: "http broker",
                    });
            }
            continue;
        }
        if only_service.is_some_and(|s| s != name) {
            continue;
        }
        for record in records {
            for endpoint in &record.endpoints {
                if endpoint
                    .metadata
                    .get("subscriber")
                    .is_none_or(|s| s != "true")
                {
                    continue;
                }
                let Some(topic) = endpoint.metadata.get("topic") else {
                    continue;
                };
                let subscriber = SubscriberView {
                    service: name.clone(),
                    version: record.version.clone(),
                    queue: endpoint.metadata.get("queue").cloned().unwrap_or_default(),
                    nodes: record.nodes.len(),
                    via: "service",
                };
                let list = topics.entry(topic.clone()).or_default();
                if !list.contains(&subscriber) {
                    list.push(subscriber);
                }
            }
        }
    }
    topics
        .into_iter()
        .map(|(topic, mut subscribers)| {
            subscribers.sort();
            TopicView { topic, subscribers }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmicro::registry::{Endpoint, Node};

    fn v(view: &impl Serialize) -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(view))
    }

    const HOSTILE: &str = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>";

    fn hostile_state() -> State {
        let mut state = State::default();
        let record = Service {
            name: HOSTILE.to_owned(),
            version: HOSTILE.to_owned(),
            metadata: Default::default(),
            endpoints: vec![
                Endpoint {
                    name: format!("Svc.{HOSTILE}"),
                    request: Some(Value::new(
                        HOSTILE,
                        HOSTILE,
                        vec![Value::new(HOSTILE, "string", vec![])],
                    )),
                    response: None,
                    metadata: Default::default(),
                },
                Endpoint {
                    name: format!("Subscriber.{HOSTILE}"),
                    request: None,
                    response: None,
                    metadata: [
                        ("subscriber".to_owned(), "true".to_owned()),
                        ("topic".to_owned(), HOSTILE.to_owned()),
                        ("queue".to_owned(), HOSTILE.to_owned()),
                    ]
                    .into(),
                },
            ],
            nodes: vec![Node {
                id: HOSTILE.to_owned(),
                address: HOSTILE.to_owned(),
                metadata: [(HOSTILE.to_owned(), HOSTILE.to_owned())].into(),
            }],
        };
        state.services.insert(HOSTILE.to_owned(), vec![record]);
        state
    }

    #[test]
    fn every_page_escapes_what_the_registry_says() {
        let env = environment().unwrap();
        let state = hostile_state();
        let window = Duration::from_secs(600);
        let records = state.services[HOSTILE].clone();
        let pages = [
            render(
                &env,
                "services.html",
                minijinja::context! { rows => v(&services(&state, window, 0)), title => "Services" },
            ),
            render(
                &env,
                "service.html",
                minijinja::context! {
                    name => HOSTILE,
                    live => v(&service_live(&state, HOSTILE, window, 0)),
                    endpoints => v(&endpoints(&records)),
                    topics => v(&topics(&state, Some(HOSTILE))),
                    title => HOSTILE,
                },
            ),
            render(
                &env,
                "topics.html",
                minijinja::context! { topics => v(&topics(&state, None)), title => "Topics" },
            ),
        ];
        for page in pages {
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(!page.contains("<img src=x"), "{page}");
            assert!(page.contains("&lt;script&gt;alert("), "{page}");
            assert!(!page.contains("could not be drawn"), "{page}");
            // Links keep the whole name in one path segment.
            if page.contains("href=\"/services/%3C") {
                assert!(page.contains("%3C%2Fscript%3E"), "{page}");
            }
        }
    }

    #[test]
    fn names_become_single_path_segments() {
        assert_eq!(segment("a/b c?d#e"), "a%2Fb%20c%3Fd%23e");
        assert_eq!(segment("greeter.v1-x_y~z"), "greeter.v1-x_y~z");
    }

    #[test]
    fn charts_place_samples_in_their_window() {
        let window = Duration::from_secs(100);
        assert_eq!(x_of(100_000, 100_000, window), CHART_W);
        assert_eq!(x_of(50_000, 100_000, window), CHART_W / 2.0);
        assert_eq!(x_of(0, 100_000, window), 0.0);
        let series: std::collections::VecDeque<Sample> = [
            Sample {
                at_ms: 50_000,
                rps: 10.0,
                error_pct: 0.0,
                p50_ms: Some(0.5),
                p99_ms: Some(12.0),
            },
            Sample {
                at_ms: 100_000,
                rps: 20.0,
                error_pct: 50.0,
                p50_ms: None,
                p99_ms: None,
            },
        ]
        .into();
        let view = numbers(&series, window, 100_000).unwrap();
        assert_eq!(view.rps, "20.0");
        assert_eq!(view.error_pct, "50.0");
        assert_eq!(view.chart.line, "300.0,60.0 600.0,2.0");
        assert_eq!(view.chart.errors, "300.0,118.0 600.0,60.0");
        assert_eq!(format_ms(Some(0.5)), "500 µs");
    }

    #[test]
    fn topics_gather_subscribers_from_every_source() {
        let mut state = hostile_state();
        state.services.insert(
            format!("{BROKER_PREFIX}user.created"),
            vec![Service {
                name: format!("{BROKER_PREFIX}user.created"),
                version: "1".into(),
                metadata: Default::default(),
                endpoints: vec![],
                nodes: ["a", "b"]
                    .iter()
                    .map(|id| Node {
                        id: (*id).to_owned(),
                        address: "127.0.0.1:1".into(),
                        metadata: [("queue".to_owned(), "mailers".to_owned())].into(),
                    })
                    .collect(),
            }],
        );
        let all = topics(&state, None);
        assert_eq!(all.len(), 2);
        let created = all.iter().find(|t| t.topic == "user.created").unwrap();
        assert_eq!(created.subscribers[0].queue, "mailers");
        assert_eq!(created.subscribers[0].nodes, 2);
        let hostile = all.iter().find(|t| t.topic == HOSTILE).unwrap();
        assert_eq!(hostile.subscribers[0].service, HOSTILE);
        // The broker's own records are topics, not services.
        let window = Duration::from_secs(60);
        assert_eq!(services(&state, window, 0).len(), 1);
        let broker = service_live(&state, &format!("{BROKER_PREFIX}user.created"), window, 0);
        assert!(!broker.found && broker.row.is_none());
        let live = service_live(&state, HOSTILE, window, 0);
        assert!(live.found);
        let row = live.row.expect("the service's row");
        assert_eq!((row.name.as_str(), row.nodes.len()), (HOSTILE, 1));
        assert!(!service_live(&state, "missing", window, 0).found);
    }
}
