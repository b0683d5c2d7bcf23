//! `rmicro`: call services and check their health from the shell.
//!
//! ```text
//! rmicro call greeter Greeter.SayHello '{"name": "ann"}' --address 127.0.0.1:50051
//! rmicro health --address 127.0.0.1:50051 [greeter.v1.Greeter]
//! ```
//!
//! Exit codes: 0 success, 1 the call failed (the error's detail is printed), 2 bad usage.

use clap::{Parser, Subcommand};
use rmicro::{CallOptions, Client, Error};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "rmicro", version, about = "The rmicro command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Target {
    /// Address of the service (`host:port`); until a registry is configured, required
    /// unless the service name is itself an address.
    #[arg(long, env = "MICRO_CLIENT_ADDRESS")]
    address: Option<String>,
    /// How long to wait for the reply.
    #[arg(long, default_value = "5s", value_parser = rmicro::cmd::parse_duration)]
    timeout: Duration,
    /// Metadata to send, `key=value`; repeatable.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Call an endpoint with a JSON request and print the JSON reply.
    Call {
        /// The service (`greeter`).
        service: String,
        /// The endpoint, `Service.Method` (`Greeter.SayHello`) or fully qualified
        /// (`greeter.v1.Greeter.SayHello`).
        endpoint: String,
        /// The request as JSON.
        #[arg(default_value = "{}")]
        request: String,
        #[command(flatten)]
        target: Target,
    },
    /// Check a service's gRPC health (`grpc.health.v1`); exit 0 only if SERVING.
    Health {
        /// The gRPC service to check (`greeter.v1.Greeter`); empty for the whole server.
        #[arg(default_value = "")]
        grpc_service: String,
        #[command(flatten)]
        target: Target,
    },
}

fn options(target: &Target) -> Result<CallOptions, Error> {
    let mut options = CallOptions::new().timeout(target.timeout);
    if let Some(address) = &target.address {
        options = options.address(address);
    }
    for pair in &target.metadata {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            Error::bad_request("rmicro.cli", format!("metadata `{pair}` is not key=value"))
        })?;
        options = options.metadata(key, value);
    }
    Ok(options)
}

async fn run(command: Command) -> Result<(), Error> {
    let client = Client::default();
    match command {
        Command::Call {
            service,
            endpoint,
            request,
            target,
        } => {
            let reply = client
                .call_json(&service, &endpoint, &request, options(&target)?)
                .await?;
            let pretty = serde_json::to_string_pretty(&reply)
                .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
            println!("{pretty}");
            Ok(())
        }
        Command::Health {
            grpc_service,
            target,
        } => {
            use tonic_health::pb::health_check_response::ServingStatus;
            use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
            let address = target.address.clone().unwrap_or_default();
            let name = if address.is_empty() {
                "health"
            } else {
                address.as_str()
            };
            let reply: HealthCheckResponse = client
                .unary(
                    name,
                    "/grpc.health.v1.Health/Check",
                    "Health.Check",
                    &HealthCheckRequest {
                        service: grpc_service.clone(),
                    },
                )
                .options(options(&target)?)
                .await?;
            let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
            println!("{}", status.as_str_name());
            if status == ServingStatus::Serving {
                Ok(())
            } else {
                Err(Error::unavailable(
                    "rmicro.cli",
                    format!("`{grpc_service}` is {}", status.as_str_name()),
                ))
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "error: {} ({} {}, from {})",
                err.detail, err.code, err.status, err.id
            );
            ExitCode::FAILURE
        }
    }
}
