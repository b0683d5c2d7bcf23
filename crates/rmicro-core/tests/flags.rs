//! A service binary adds its own flags next to the standard ones, and keeps the log
//! subscriber it installed itself.

extern crate rmicro_core as rmicro;

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(clap::Args, Debug)]
struct UserFlags {
    /// Where the users live.
    #[arg(long, default_value = "sqlite://users.db")]
    dsn: String,
    /// How many users a page holds at most.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
}

/// Named as rmicro's own flags are: clap's group ids must not clash.
#[derive(clap::Args, Debug)]
struct Flags {
    /// Apply migrations at start.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    migrate: bool,
}

#[derive(clap::Args, Debug)]
struct TracingFlags {
    /// Unrelated to rmicro's tracing flags of the same type name.
    #[arg(long)]
    sample_everything: bool,
}

#[test]
fn an_applications_flags_may_share_rmicros_type_names() {
    let service = rmicro::Service::builder("user")
        .app_flags::<Flags>()
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .args(["user", "--migrate=false"])
        .build()
        .expect("no clash with rmicro's own `Flags`");
    assert!(!service.app_flags::<Flags>().expect("parsed").migrate);
    let service = rmicro::Service::builder("user")
        .app_flags::<TracingFlags>()
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .args(["user", "--sample-everything"])
        .build()
        .expect("no clash with rmicro's own `TracingFlags`");
    assert!(
        service
            .app_flags::<TracingFlags>()
            .expect("parsed")
            .sample_everything
    );
}

fn build(args: &[&str]) -> Result<rmicro::Service, rmicro::BuildError> {
    rmicro::Service::builder("user")
        .app_flags::<UserFlags>()
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .args(args.iter().copied())
        .build()
}

#[test]
fn app_flags_parse_next_to_the_standard_ones() {
    let service = build(&[
        "user",
        "--dsn",
        "mysql://db/users",
        "--server-version",
        "2.0.0",
    ])
    .unwrap();
    let flags = service.app_flags::<UserFlags>().unwrap();
    assert_eq!(flags.dsn, "mysql://db/users");
    assert_eq!(flags.page_size, 100);
    assert_eq!(service.version(), "2.0.0");
    assert!(service.app_flags::<String>().is_none());
    let help = build(&["user", "--help"]).unwrap_err().to_string();
    for flag in ["--dsn", "--page-size", "--registry", "--server-address"] {
        assert!(help.contains(flag), "`{flag}` missing from --help:\n{help}");
    }
    let err = build(&["user", "--page-size", "many"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--page-size"), "{err}");
}

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn build_keeps_the_applications_own_log_subscriber() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let _service = build(&["user", "--log-format", "json"]).unwrap();
    tracing::info!("from the application");
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("from the application"), "{text}");
    assert!(
        !text.starts_with('{'),
        "rmicro replaced the subscriber: {text}"
    );
}

#[test]
fn the_retry_budget_comes_from_the_builder_or_the_flags() {
    use rmicro::client::RetryBudget;
    let from_code = rmicro::Service::builder("user")
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .retry_budget(RetryBudget::default().percent(7.0))
        .args(["user"])
        .build()
        .expect("builds");
    let budget = from_code.client().options().retry_budget;
    assert_eq!(budget.percent_value(), 7.0);
    assert_eq!(budget.min_per_second_value(), 10, "the default floor");
    let from_flags = rmicro::Service::builder("user")
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .retry_budget(RetryBudget::default().percent(7.0))
        .args([
            "user",
            "--client-retry-budget",
            "5",
            "--client-retry-min-per-second",
            "2",
        ])
        .build()
        .expect("builds");
    let budget = from_flags.client().options().retry_budget;
    assert_eq!(
        (budget.percent_value(), budget.min_per_second_value()),
        (5.0, 2),
        "flags win over code"
    );
}
