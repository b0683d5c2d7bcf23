//! Calls a running greeter: `greeter-client 127.0.0.1:50051 [name]`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // `--registry etcd|consul` work once the adapters are installed.
    rmicro_etcd::install();
    rmicro_consul::install();
    let mut args = std::env::args().skip(1);
    let Some(address) = args.next() else {
        eprintln!("usage: greeter-client HOST:PORT [NAME]");
        return ExitCode::from(2);
    };
    let name = args.next().unwrap_or_else(|| "rmicro".into());
    match greeter::tour(rmicro::Client::default(), &address, &name).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
