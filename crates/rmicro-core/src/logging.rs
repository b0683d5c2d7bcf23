//! Process-wide log output through `tracing`: human-readable text, or one JSON object
//! per line for ELK and other collectors.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (more services in one process,
/// or a subscriber the application set up itself) leave it as it is.
pub(crate) fn init(level: &str, format: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|err| {
        eprintln!("warning: log level `{level}` is not valid ({err}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.try_init()
    };
}
