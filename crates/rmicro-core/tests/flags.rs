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

#[test]
fn connection_limit_flags_reach_the_server_and_zero_turns_a_timer_off() {
    let defaults = rmicro::transport::ConnectionLimits::default();
    let service = rmicro::Service::builder("limits")
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .args([
            "limits",
            "--server-max-connections",
            "64",
            "--server-handshake-timeout",
            "2s",
            "--server-idle-timeout",
            "0",
            "--server-max-concurrent-streams",
            "32",
            "--server-max-header-list-size",
            "8192",
            "--server-max-pending-resets",
            "5",
            "--server-keepalive-interval",
            "30s",
            "--server-keepalive-timeout",
            "3s",
        ])
        .build()
        .expect("valid flags");
    let limits = &service.server_options().limits;
    assert_eq!(
        *limits,
        rmicro::transport::ConnectionLimits {
            max_connections: 64,
            handshake_timeout: std::time::Duration::from_secs(2),
            idle_timeout: None,
            max_concurrent_streams: 32,
            max_header_list_size: 8192,
            max_pending_resets: 5,
            max_error_resets: defaults.max_error_resets,
            keepalive_interval: Some(std::time::Duration::from_secs(30)),
            keepalive_timeout: std::time::Duration::from_secs(3),
            tcp_keepalive: defaults.tcp_keepalive,
        }
    );
    // Unset flags keep what the code chose.
    let chosen = rmicro::transport::ConnectionLimits {
        max_connections: 7,
        ..defaults.clone()
    };
    let service = rmicro::Service::builder("limits")
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .connection_limits(chosen.clone())
        .args(["limits", "--server-idle-timeout", "1m"])
        .build()
        .expect("valid flags");
    assert_eq!(
        service.server_options().limits,
        rmicro::transport::ConnectionLimits {
            idle_timeout: Some(std::time::Duration::from_secs(60)),
            ..chosen
        }
    );
    // A zero connection limit is refused with a sentence.
    let err = rmicro::Service::builder("limits")
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .args(["limits", "--server-max-connections", "0"])
        .build()
        .expect_err("0 connections is no server");
    assert!(
        err.to_string().contains("--server-max-connections"),
        "{err}"
    );
}
