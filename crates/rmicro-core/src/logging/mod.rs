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

/// Installs the process's log subscriber (stderr) for a program that is not a
/// [`Service`](crate::Service) — a gateway, a tool — with the same `level`
/// directives and `format`s (`text`, `pretty`, `json`, `ecs`; empty picks by
/// terminal) as a service's `--log-level` and `--log-format`; `name` and
/// `version` fill the ECS `service.*` fields. A second call changes nothing.
pub fn install(level: &str, format: &str, name: &str, version: &str) -> std::io::Result<()> {
    let identity = Identity {
        name: name.to_owned(),
        version: version.to_owned(),
        node: format!("{name}-{}", std::process::id()),
    };
    init(level, format, &identity, None)
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
            (Lines::File(writer), false)
        }
        None => (Lines::Stderr, std::io::stderr().is_terminal()),
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

/// Where log lines go, chosen once: a line's writer is made per event without
/// an allocation or a shared count touched (a boxed writer cost both).
enum Lines {
    Stderr,
    File(NonBlocking),
}

/// One event's writer of [`Lines`].
enum LineWriter<'a> {
    Stderr(std::io::Stderr),
    File(&'a NonBlocking),
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        match self {
            Lines::Stderr => LineWriter::Stderr(std::io::stderr()),
            Lines::File(file) => LineWriter::File(file),
        }
    }
}

impl std::io::Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LineWriter::Stderr(stderr) => stderr.write(buf),
            LineWriter::File(file) => {
                file.push(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LineWriter::Stderr(stderr) => stderr.flush(),
            LineWriter::File(_) => Ok(()),
        }
    }
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

/// Where in `s` the first byte JSON must escape (`"`, `\`, a control byte) is,
/// looked for eight bytes at a time: most of a log line needs no escape at all.
fn first_escape(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `x` is below `n` (n <= 128), without a false positive.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH != 0;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if below(x, 0x20) || below(x ^ (ONES * 0x22), 1) || below(x ^ (ONES * 0x5c), 1) {
            break;
        }
        at += 8;
    }
    s[at..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|i| at + i)
}

/// Writes `s` escaped as the inside of a JSON string.
fn json_body(w: &mut (impl std::fmt::Write + ?Sized), s: &str) -> std::fmt::Result {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(offset) = first_escape(&bytes[start..]) {
        let i = start + offset;
        // Every escaped byte is ASCII, so `i` is a character boundary.
        w.write_str(&s[start..i])?;
        match bytes[i] {
            b'"' => w.write_str("\\\"")?,
            b'\\' => w.write_str("\\\\")?,
            b'\n' => w.write_str("\\n")?,
            b'\r' => w.write_str("\\r")?,
            b'\t' => w.write_str("\\t")?,
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                w.write_str("\\u00")?;
                w.write_char(char::from(HEX[usize::from(b >> 4)]))?;
                w.write_char(char::from(HEX[usize::from(b & 0xf)]))?;
            }
        }
        start = i + 1;
    }
    w.write_str(&s[start..])
}

/// Writes `s` as a JSON string (quotes, escapes).
fn json_str(w: &mut (impl std::fmt::Write + ?Sized), s: &str) -> std::fmt::Result {
    w.write_char('"')?;
    json_body(w, s)?;
    w.write_char('"')
}

/// A writer that escapes what is written through it for the inside of a JSON
/// string: a `Debug` or `Display` value goes out escaped with no copy.
struct Escaping<'a, W: ?Sized>(&'a mut W);

impl<W: std::fmt::Write + ?Sized> std::fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        json_body(self.0, s)
    }
}

/// Writes an integer without the formatting machinery.
fn json_int(w: &mut (impl std::fmt::Write + ?Sized), n: impl itoa::Integer) -> std::fmt::Result {
    w.write_str(itoa::Buffer::new().format(n))
}

/// The fields ECS renames or combines, held until the end of the line.
#[derive(Clone, Copy)]
enum Held {
    Message,
    Service,
    Endpoint,
    Status,
    Error,
    Trace,
    Span,
}

impl Held {
    fn of(name: &str) -> Option<Held> {
        Some(match name {
            "message" => Held::Message,
            "service" => Held::Service,
            "endpoint" => Held::Endpoint,
            "status" => Held::Status,
            "error" => Held::Error,
            "trace_id" => Held::Trace,
            "span_id" => Held::Span,
            _ => return None,
        })
    }
}

/// One line being written: ordinary fields go straight out, the few ECS renames
/// or combines are kept (in one buffer, as ranges) until the end.
struct Line<'a, W: std::fmt::Write + ?Sized> {
    out: &'a mut W,
    result: std::fmt::Result,
    /// The held fields' text, one after another.
    held: &'a mut String,
    /// Where each [`Held`] field's text is in `held`.
    slots: [Option<(usize, usize)>; 7],
    micros: Option<u64>,
}

impl<W: std::fmt::Write + ?Sized> Line<'_, W> {
    /// Writes `,"name":` (renamed when it would repeat a fixed key).
    fn key(&mut self, name: &str) {
        if self.result.is_err() {
            return;
        }
        let reserved = RESERVED.contains(&name);
        self.result = (|| {
            self.out
                .write_str(if reserved { ",\"fields." } else { ",\"" })?;
            json_body(self.out, name)?;
            self.out.write_str("\":")
        })();
    }

    /// Writes a field's value as a JSON string, or holds it when ECS renames it.
    fn text(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut dyn std::fmt::Write) -> std::fmt::Result,
    ) {
        if let Some(which) = Held::of(name) {
            let from = self.held.len();
            // Writing into a String cannot fail.
            let _ = write(self.held);
            self.slots[which as usize] = Some((from, self.held.len()));
            return;
        }
        self.key(name);
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_char('"')?;
                write(&mut Escaping(&mut *self.out))?;
                self.out.write_char('"')
            })();
        }
    }

    fn raw(&mut self, name: &str, write: impl FnOnce(&mut W) -> std::fmt::Result) {
        self.key(name);
        if self.result.is_ok() {
            self.result = write(self.out);
        }
    }
}

impl<W: std::fmt::Write + ?Sized> Visit for Line<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field.name(), |w| write!(w, "{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field.name(), |w| w.write_str(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field.name(), |w| json_int(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "micros" {
            self.micros = Some(value);
            return;
        }
        self.raw(field.name(), |w| json_int(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field.name(), |w| {
            w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field.name(), |w| write!(w, "{value}"));
        } else {
            self.text(field.name(), |w| write!(w, "{value}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field.name(), |w| write!(w, "{value}"));
    }
}

/// A line's buffers: the line itself, and the held fields.
#[derive(Default)]
struct Buffers {
    line: String,
    held: String,
}

thread_local! {
    /// The buffers, kept between lines so a line allocates nothing. The line is
    /// made in a `String` of our own and handed to the formatter's writer once:
    /// each write through that writer is a dynamic call, and a line has dozens.
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
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
        let mut write = |buffers: &mut Buffers| {
            buffers.line.clear();
            buffers.held.clear();
            self.write_line(&mut buffers.line, event, &mut buffers.held)?;
            writer.write_str(&buffers.line)
        };
        BUFFERS.with(|buffers| match buffers.try_borrow_mut() {
            Ok(mut buffers) => write(&mut buffers),
            // A field's `Debug` that logs: that line gets buffers of its own.
            Err(_) => write(&mut Buffers::default()),
        })
    }
}

impl Ecs {
    fn write_line(
        &self,
        w: &mut String,
        event: &tracing::Event<'_>,
        held: &mut String,
    ) -> std::fmt::Result {
        use std::fmt::Write as _;
        let meta = event.metadata();
        w.write_str("{\"@timestamp\":\"")?;
        let stamp = crate::broker::typed::rfc3339_bytes(std::time::SystemTime::now());
        w.write_str(std::str::from_utf8(&stamp).unwrap_or("1970-01-01T00:00:00.000Z"))?;
        w.write_str(match *meta.level() {
            tracing::Level::ERROR => "\",\"log.level\":\"error\"",
            tracing::Level::WARN => "\",\"log.level\":\"warn\"",
            tracing::Level::INFO => "\",\"log.level\":\"info\"",
            tracing::Level::DEBUG => "\",\"log.level\":\"debug\"",
            tracing::Level::TRACE => "\",\"log.level\":\"trace\"",
        })?;
        w.write_str(&self.fixed)?;
        w.write_str(",\"log.logger\":")?;
        json_str(w, meta.target())?;
        if let Some(file) = meta.file() {
            w.write_str(",\"log.origin.file.name\":")?;
            json_str(w, file)?;
        }
        if let Some(number) = meta.line() {
            w.write_str(",\"log.origin.file.line\":")?;
            json_int(w, number)?;
        }
        let mut line = Line {
            out: w,
            result: Ok(()),
            held,
            slots: [None; 7],
            micros: None,
        };
        event.record(&mut line);
        let Line {
            out: w,
            result,
            held,
            slots,
            micros,
        } = line;
        result?;
        let held: &str = held;
        let get = |which: Held| slots[which as usize].map(|(from, to)| &held[from..to]);
        w.write_str(",\"message\":")?;
        json_str(w, get(Held::Message).unwrap_or(""))?;
        let status = get(Held::Status);
        if let Some(error) = get(Held::Error) {
            w.write_str(",\"error.message\":")?;
            json_str(w, error)?;
            if let Some(status) = status {
                w.write_str(",\"error.type\":")?;
                json_str(w, status)?;
            }
        }
        // The trace the line belongs to: a request log names its call's span, any
        // other line the span current where it was written.
        match (get(Held::Trace), get(Held::Span)) {
            (Some(trace), Some(span)) => write_ids(w, trace, span)?,
            _ => {
                if let Some((trace, span)) = crate::wrapper::trace::current_ids() {
                    write_ids(w, &trace, &span)?;
                }
            }
        }
        // A request log (the logging wrapper's fields).
        let service = get(Held::Service);
        if let Some(endpoint) = get(Held::Endpoint) {
            w.write_str(",\"micro.endpoint\":\"")?;
            if let Some(service) = service.filter(|s| !s.is_empty()) {
                json_body(w, service)?;
                w.write_char('.')?;
            }
            json_body(w, endpoint)?;
            w.write_char('"')?;
        }
        if let Some(service) = service {
            w.write_str(",\"micro.service\":")?;
            json_str(w, service)?;
        }
        if let Some(status) = status {
            w.write_str(",\"micro.status\":")?;
            json_str(w, status)?;
        }
        if let Some(micros) = micros {
            w.write_str(",\"event.duration\":")?;
            json_int(w, micros.saturating_mul(1000))?;
        }
        w.write_str("}\n")
    }
}

/// Writes `trace.id` and `span.id`.
fn write_ids(w: &mut impl std::fmt::Write, trace: &str, span: &str) -> std::fmt::Result {
    w.write_str(",\"trace.id\":")?;
    json_str(w, trace)?;
    w.write_str(",\"span.id\":")?;
    json_str(w, span)
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

    /// What the ECS format writes for the events `log` makes.
    fn ecs_lines(log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(Ecs::for_service("greeter", "1.0.0", "greeter-1"))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(crate::sync::lock(&lines.0).clone()).expect("UTF-8")
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
    fn the_escape_scan_finds_exactly_the_first_byte_to_escape() {
        let naive = |s: &[u8]| s.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\');
        // Every special byte (and near misses: space, '#', '[', ']', 0x7f, 0x80+)
        // at every position of strings around the 8-byte word size.
        for special in [
            0u8, 0x1f, b'\n', b'"', b'\\', b' ', b'#', b'!', b'[', b']', 0x7f, 0xc3,
        ] {
            for len in 0..=26 {
                for at in 0..len {
                    let mut text = vec![b'a'; len];
                    text[at] = special;
                    assert_eq!(
                        first_escape(&text),
                        naive(&text),
                        "{special:#x} at {at} of {len}"
                    );
                    // A second one after it does not change the answer.
                    if at + 1 < len {
                        text[len - 1] = b'"';
                        assert_eq!(first_escape(&text), naive(&text));
                    }
                }
            }
        }
    }

    #[test]
    fn held_fields_and_debug_values_are_escaped_once() {
        let text = ecs_lines(|| {
            tracing::info!(
                service = "a\"b",
                endpoint = "X.Y\n",
                detail = ?"quoted \"debug\"",
                n = -7i64,
                "first"
            );
            tracing::info!("second has none of them");
        });
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        assert_eq!(parsed[0]["micro.endpoint"], "a\"b.X.Y\n");
        assert_eq!(parsed[0]["micro.service"], "a\"b");
        assert_eq!(parsed[0]["detail"], "\"quoted \\\"debug\\\"\"");
        assert_eq!(parsed[0]["n"], -7);
        // The buffer held fields share is cleared between lines.
        assert_eq!(parsed[1]["message"], "second has none of them");
        assert!(parsed[1].get("micro.service").is_none(), "{}", parsed[1]);
    }

    #[test]
    fn a_field_named_like_an_ecs_key_does_not_repeat_it() {
        let text = ecs_lines(|| {
            tracing::info!(
                log.level = "fake",
                count = 3u64,
                ratio = 0.5,
                ok = true,
                "hi"
            );
        });
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
        let text = ecs_lines(|| {
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
