//! Calls a greeter once per endpoint and prints the replies.
//!
//! ```text
//! greeter-client 127.0.0.1:50051 [NAME]            # a fixed address
//! greeter-client [NAME] [--registry mdns ...]       # found by name through the registry
//! ```
//!
//! Without an address it finds the service `greeter` through the registry chosen by
//! the usual flags (`--registry`, `--registry-address`, env `MICRO_REGISTRY`, …;
//! the local registry by default).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // `--registry etcd|consul|mdns` work once the adapters are installed.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().take_while(|a| !a.starts_with('-')).collect();
    let flags = args.iter().skip(positional.len());
    let (address, name) = match positional.as_slice() {
        [] => (None, "rmicro"),
        [one] if one.contains(':') => (Some(one.as_str()), "rmicro"),
        [one] => (None, one.as_str()),
        [address, name] => (Some(address.as_str()), name.as_str()),
        _ => {
            eprintln!("usage: greeter-client [HOST:PORT] [NAME] [flags]");
            return ExitCode::from(2);
        }
    };
    let service = match rmicro::Service::builder("greeter-client")
        .args(std::iter::once(&"greeter-client".to_owned()).chain(flags))
        .build()
    {
        Ok(service) => service,
        Err(err) => err.exit(),
    };
    match greeter::tour(service.client(), address, name).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
