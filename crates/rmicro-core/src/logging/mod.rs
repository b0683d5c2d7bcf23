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
    /// `,"ecs.version":…,"service.name":…,…`, written once.
    fixed: String,
}

impl Ecs {
    pub(crate) fn new(identity: &Identity) -> Self {
        let mut fixed = String::new();
        let mut put = |key: &str, value: &str| {
            fixed.push(',');
            let _ = json_str(&mut fixed, key);
            fixed.push(':');
            let _ = json_str(&mut fixed, value);
        };
        put("ecs.version", ECS_VERSION);
        put("service.name", &identity.name);
        put("service.version", &identity.version);
        put("service.node.name", &identity.node);
        Ecs { fixed }
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

/// The keys every line has; an event field with one of these names is written as
/// `fields.<name>` so that no line holds a key twice.
const RESERVED: [&str; 16] = [
    "@timestamp",
    "log.level",
    "message",
    "ecs.version",
    "service.name",
    "service.version",
    "service.node.name",
    "log.logger",
    "log.origin.file.name",
    "log.origin.file.line",
    "error.message",
    "error.type",
    "trace.id",
    "span.id",
    "micro.endpoint",
    "event.duration",
];

/// Writes `s` as a JSON string (quotes, escapes).
fn json_str(w: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    w.write_char('"')?;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => {
                w.write_str(&s[start..i])?;
                write!(w, "\\u{b:04x}")?;
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        w.write_str(&s[start..i])?;
        w.write_str(escaped)?;
        start = i + 1;
    }
    w.write_str(&s[start..])?;
    w.write_char('"')
}

/// One line being written: ordinary fields go straight out, the few ECS renames
/// or combines are held until the end.
struct Line<'a, W: std::fmt::Write> {
    out: &'a mut W,
    result: std::fmt::Result,
    message: Option<String>,
    service: Option<String>,
    endpoint: Option<String>,
    status: Option<String>,
    error: Option<String>,
    trace: Option<String>,
    span: Option<String>,
    micros: Option<u64>,
}

impl<W: std::fmt::Write> Line<'_, W> {
    /// Writes `,"name":` (renamed when it would repeat a fixed key).
    fn key(&mut self, name: &str) {
        if self.result.is_err() {
            return;
        }
        let reserved = RESERVED.contains(&name);
        self.result = (|| {
            self.out.write_char(',')?;
            if reserved {
                json_str(self.out, &format!("fields.{name}"))?;
            } else {
                json_str(self.out, name)?;
            }
            self.out.write_char(':')
        })();
    }

    /// Holds the value of a field ECS renames; false for any other field.
    fn hold(&mut self, name: &str, value: &str) -> bool {
        let slot = match name {
            "message" => &mut self.message,
            "service" => &mut self.service,
            "endpoint" => &mut self.endpoint,
            "status" => &mut self.status,
            "error" => &mut self.error,
            "trace_id" => &mut self.trace,
            "span_id" => &mut self.span,
            _ => return false,
        };
        *slot = Some(value.to_owned());
        true
    }

    fn string(&mut self, name: &str, value: &str) {
        if !self.hold(name, value) {
            self.key(name);
            if self.result.is_ok() {
                self.result = json_str(self.out, value);
            }
        }
    }

    fn raw(&mut self, name: &str, value: std::fmt::Arguments<'_>) {
        self.key(name);
        if self.result.is_ok() {
            self.result = self.out.write_fmt(value);
        }
    }
}

impl<W: std::fmt::Write> Visit for Line<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.string(field.name(), &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field.name(), format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "micros" {
            self.micros = Some(value);
            return;
        }
        self.raw(field.name(), format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field.name(), format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field.name(), format_args!("{value}"));
        } else {
            self.string(field.name(), &value.to_string());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field.name(), &value.to_string());
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
        let meta = event.metadata();
        let w = &mut writer;
        w.write_str("{\"@timestamp\":")?;
        json_str(
            w,
            &crate::broker::typed::rfc3339(std::time::SystemTime::now()),
        )?;
        let level = match *meta.level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(w, ",\"log.level\":\"{level}\"")?;
        w.write_str(&self.fixed)?;
        w.write_str(",\"log.logger\":")?;
        json_str(w, meta.target())?;
        if let Some(file) = meta.file() {
            w.write_str(",\"log.origin.file.name\":")?;
            json_str(w, file)?;
        }
        if let Some(number) = meta.line() {
            write!(w, ",\"log.origin.file.line\":{number}")?;
        }
        let mut line = Line {
            out: w,
            result: Ok(()),
            message: None,
            service: None,
            endpoint: None,
            status: None,
            error: None,
            trace: None,
            span: None,
            micros: None,
        };
        event.record(&mut line);
        line.result?;
        let Line {
            message,
            service,
            endpoint,
            status,
            error,
            trace,
            span,
            micros,
            ..
        } = line;
        w.write_str(",\"message\":")?;
        json_str(w, message.as_deref().unwrap_or(""))?;
        if let Some(error) = &error {
            w.write_str(",\"error.message\":")?;
            json_str(w, error)?;
            if let Some(status) = &status {
                w.write_str(",\"error.type\":")?;
                json_str(w, status)?;
            }
        }
        // The trace the line belongs to: a request log names its call's span, any
        // other line the span current where it was written.
        let ids = match (trace, span) {
            (Some(trace), Some(span)) => Some((trace, span)),
            _ => crate::wrapper::trace::current_ids(),
        };
        if let Some((trace, span)) = ids {
            w.write_str(",\"trace.id\":")?;
            json_str(w, &trace)?;
            w.write_str(",\"span.id\":")?;
            json_str(w, &span)?;
        }
        // A request log (the logging wrapper's fields).
        if let Some(endpoint) = &endpoint {
            w.write_str(",\"micro.endpoint\":")?;
            match &service {
                Some(s) if !s.is_empty() => json_str(w, &format!("{s}.{endpoint}"))?,
                _ => json_str(w, endpoint)?,
            }
        }
        if let Some(service) = &service {
            w.write_str(",\"micro.service\":")?;
            json_str(w, service)?;
        }
        if let Some(status) = &status {
            w.write_str(",\"micro.status\":")?;
            json_str(w, status)?;
        }
        if let Some(micros) = micros {
            write!(w, ",\"event.duration\":{}", micros.saturating_mul(1000))?;
        }
        w.write_str("}\n")
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
    fn strings_are_escaped_as_json_requires() {
        for text in [
            "plain",
            "quote \" and \\ slash",
            "lines\nand\ttabs\r",
            "\u{1}\u{1f}ctl",
            "ünïcødé ✓ 😀",
            "",
        ] {
            let mut out = String::new();
            json_str(&mut out, text).unwrap();
            let back: String = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(back, text);
        }
    }

    #[test]
    fn a_field_named_like_an_ecs_key_does_not_repeat_it() {
        let lines = Lines::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(Ecs::for_service("greeter", "1.0.0", "greeter-1"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                log.level = "fake",
                count = 3u64,
                ratio = 0.5,
                ok = true,
                "hi"
            );
        });
        let text = String::from_utf8(crate::sync::lock(&lines.0).clone()).expect("UTF-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
        assert_eq!(line["log.level"], "info");
        assert_eq!(line["fields.log.level"], "fake");
        assert_eq!(line["count"], 3);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["ok"], true);
        let keys = text.matches("\"log.level\":").count();
        assert_eq!(keys, 1, "{text}");
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
