//! Process-wide log output through `tracing`: human-readable text (`text`, or
//! `pretty` on a terminal), one JSON object per line (`json`), or Elastic Common
//! Schema lines for ELK (`ecs`).
//!
//! `--log-format ecs` writes what Filebeat and Elasticsearch index without a
//! pipeline, in the shape of Elastic's own `ecs-logging` libraries: `@timestamp`,
//! `log.level`, `message`, `ecs.version`, `service.name`, `service.version`,
//! `service.node.name`, `log.logger` (the event's target), `log.origin.file.name` and
//! `.line`, `error.message` (and `error.type`, the gRPC status) for an event's
//! `error` field, `trace.id` and `span.id` when the line is written in a traced
//! call (see [`crate::wrapper::trace`]); a request log's
//! `service`, `endpoint`, `status` and `micros` become `micro.service`,
//! `micro.endpoint` (go-micro's `<service>.<endpoint>`), `micro.status` and
//! `event.duration` (nanoseconds, as ECS has it); other fields keep their names.

mod file;

pub use file::{NonBlocking, RotatingFile, Rotation, dropped_lines};

use std::io::IsTerminal as _;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The ECS version the `ecs` lines follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Who writes the log lines, for the `service.*` fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) node: String,
}

/// The log file's writer, when `--log-file` set one, for [`flush`].
static FILE: std::sync::OnceLock<NonBlocking> = std::sync::OnceLock::new();

/// Installs the global subscriber once; later calls (more services in one process,
/// or a subscriber the application set up itself) leave it as it is. `format` is
/// `text`, `pretty`, `json` or `ecs`; empty picks `pretty` on a terminal, else `text`.
/// Lines go to stderr, or to `file` (rotated, written off the calls' path).
pub(crate) fn init(
    level: &str,
    format: &str,
    identity: &Identity,
    file: Option<(&std::path::Path, Rotation)>,
) -> std::io::Result<()> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|err| {
        eprintln!("warning: log level `{level}` is not valid ({err}); using `info`");
        EnvFilter::new("info")
    });
    let (writer, terminal) = match file {
        Some((path, rotation)) => {
            let writer = NonBlocking::new(RotatingFile::open(path, rotation)?);
            let _ = FILE.set(writer.clone());
            (BoxMakeWriter::new(move || writer.clone()), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let format = match format {
        "" if terminal => "pretty",
        "" => "text",
        other => other,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(writer);
    let _ = match format {
        "json" => builder.json().with_current_span(false).try_init(),
        "ecs" => builder.event_format(Ecs::new(identity)).try_init(),
        "pretty" => builder.pretty().try_init(),
        _ => builder.try_init(),
    };
    Ok(())
}

/// Waits (up to `limit`) until the log file holds every line logged so far; a
/// service calls it as it shuts down. Nothing to do when logging to stderr.
pub fn flush(limit: std::time::Duration) {
    if let Some(file) = FILE.get() {
        file.sync(limit);
    }
}

/// Formats events as ECS JSON lines; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Ecs {
    identity: Identity,
}

impl Ecs {
    pub(crate) fn new(identity: &Identity) -> Self {
        Ecs {
            identity: identity.clone(),
        }
    }

    /// An ECS formatter for service `name` at `version` on node `node`, for an
    /// application that builds its own subscriber
    /// (`tracing_subscriber::fmt().event_format(Ecs::for_service(..))`).
    pub fn for_service(name: &str, version: &str, node: &str) -> Self {
        Ecs::new(&Identity {
            name: name.to_owned(),
            version: version.to_owned(),
            node: node.to_owned(),
        })
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
}

impl<S, N> FormatEvent<S, N> for Ecs
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut fields = fields.0;
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        let mut put = |key: &str, value: serde_json::Value| {
            line.insert(key.to_owned(), value);
        };
        put(
            "@timestamp",
            crate::broker::typed::rfc3339(std::time::SystemTime::now()).into(),
        );
        put("log.level", meta.level().as_str().to_lowercase().into());
        put(
            "message",
            fields.remove("message").unwrap_or_else(|| "".into()),
        );
        put("ecs.version", ECS_VERSION.into());
        put("service.name", self.identity.name.clone().into());
        put("service.version", self.identity.version.clone().into());
        put("service.node.name", self.identity.node.clone().into());
        put("log.logger", meta.target().into());
        if let Some(file) = meta.file() {
            put("log.origin.file.name", file.into());
        }
        if let Some(number) = meta.line() {
            put("log.origin.file.line", number.into());
        }
        if let Some(error) = fields.remove("error") {
            put("error.message", error);
            if let Some(status) = fields.get("status") {
                put("error.type", status.clone());
            }
        }
        // The trace the line belongs to: a request log names its call's span, any
        // other line the span current where it was written.
        let ids = match (fields.remove("trace_id"), fields.remove("span_id")) {
            (Some(trace), Some(span)) => Some((trace, span)),
            _ => crate::wrapper::trace::current_ids().map(|(t, s)| (t.into(), s.into())),
        };
        if let Some((trace, span)) = ids {
            put("trace.id", trace);
            put("span.id", span);
        }
        // A request log (the logging wrapper's fields).
        let service = fields.remove("service");
        if let Some(endpoint) = fields.remove("endpoint") {
            let name = match (&service, endpoint.as_str()) {
                (Some(serde_json::Value::String(s)), Some(e)) if !s.is_empty() => {
                    format!("{s}.{e}").into()
                }
                _ => endpoint,
            };
            put("micro.endpoint", name);
        }
        if let Some(service) = service {
            put("micro.service", service);
        }
        if let Some(status) = fields.remove("status") {
            put("micro.status", status);
        }
        if let Some(micros) = fields.remove("micros").and_then(|m| m.as_u64()) {
            put("event.duration", micros.saturating_mul(1000).into());
        }
        for (key, value) in fields {
            put(&key, value);
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            crate::sync::lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn ecs_lines_carry_the_schema_and_the_calls_fields() {
        let lines = Lines::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(Ecs::for_service("greeter", "1.0.0", "greeter-1"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                service = "greeter",
                endpoint = "Greeter.SayHello",
                status = ?crate::Code::InvalidArgument,
                error = "name must not be empty",
                micros = 1500u64,
                "call failed"
            );
            tracing::info!(peer = "127.0.0.1:5", "a \"quoted\" message");
            tracing::warn!(
                error = "boom",
                status = "Internal",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = "00f067aa0ba902b7",
                "traced"
            );
        });
        let text = String::from_utf8(crate::sync::lock(&lines.0).clone()).expect("UTF-8");
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        assert_eq!(parsed.len(), 3, "{text}");
        let traced = &parsed[2];
        assert_eq!(traced["trace.id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(traced["span.id"], "00f067aa0ba902b7");
        assert_eq!(traced["error.type"], "Internal");
        assert!(traced.get("trace_id").is_none(), "{traced}");
        assert!(parsed[1].get("trace.id").is_none(), "no span, no trace.id");
        let call = &parsed[0];
        assert_eq!(call["log.level"], "warn");
        assert_eq!(call["message"], "call failed");
        assert_eq!(call["ecs.version"], ECS_VERSION);
        assert_eq!(call["service.name"], "greeter");
        assert_eq!(call["service.version"], "1.0.0");
        assert_eq!(call["service.node.name"], "greeter-1");
        assert_eq!(call["micro.endpoint"], "greeter.Greeter.SayHello");
        assert_eq!(call["micro.service"], "greeter");
        assert_eq!(call["micro.status"], "InvalidArgument");
        assert_eq!(call["error.message"], "name must not be empty");
        assert_eq!(call["event.duration"], 1_500_000);
        assert_eq!(call["log.logger"], "rmicro_core::logging::tests");
        assert!(
            call["log.origin.file.name"]
                .as_str()
                .is_some_and(|f| f.ends_with("logging/mod.rs"))
        );
        assert!(call["log.origin.file.line"].as_u64().is_some());
        let stamp = call["@timestamp"].as_str().expect("@timestamp");
        assert!(stamp.len() == 24 && stamp.ends_with('Z'), "{stamp}");
        assert_eq!(parsed[1]["message"], "a \"quoted\" message");
        assert_eq!(parsed[1]["peer"], "127.0.0.1:5");
    }
}
