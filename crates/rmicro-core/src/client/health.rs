//! Asking one node for its gRPC health (`grpc.health.v1.Health/Check`), as
//! `rmicro health`, `rmicro web` and `--health-check` do: the answer is one of the
//! protocol's statuses, or `UNREACHABLE` with the reason, never an error to handle.

use super::{CallOptions, Client};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What a node said when asked for its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// `SERVING`.
    Serving,
    /// `NOT_SERVING` (draining, or told so by its application).
    NotServing,
    /// `SERVICE_UNKNOWN`: the node does not serve the gRPC service asked about.
    ServiceUnknown,
    /// `UNKNOWN`: the node answered without a status it knows.
    Unknown,
    /// No answer: refused, timed out, or not a gRPC server.
    Unreachable,
}

impl HealthStatus {
    /// The protocol's name (`SERVING`, …), or `UNREACHABLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Serving => "SERVING",
            HealthStatus::NotServing => "NOT_SERVING",
            HealthStatus::ServiceUnknown => "SERVICE_UNKNOWN",
            HealthStatus::Unknown => "UNKNOWN",
            HealthStatus::Unreachable => "UNREACHABLE",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's health answer: its status and, when it does not serve, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAnswer {
    /// What it said.
    pub status: HealthStatus,
    /// Why it does not serve (the error's detail); empty when it serves.
    pub detail: String,
}

impl Client {
    /// Asks the node at `address` (`host:port`) whether it serves `grpc_service`
    /// (empty: the whole server), with `options` (timeout, metadata); the address
    /// is called directly, never through the selector.
    ///
    /// ```no_run
    /// # extern crate rmicro_core as rmicro;
    /// # async fn demo(client: rmicro::Client) {
    /// use rmicro::client::{CallOptions, HealthStatus};
    /// let options = CallOptions::new().timeout(std::time::Duration::from_secs(1));
    /// let answer = client.check_health("127.0.0.1:50051", "", options).await;
    /// if answer.status != HealthStatus::Serving {
    ///     eprintln!("{}: {}", answer.status, answer.detail);
    /// }
    /// # }
    /// ```
    pub async fn check_health(
        &self,
        address: &str,
        grpc_service: &str,
        options: CallOptions,
    ) -> HealthAnswer {
        let reply: Result<HealthCheckResponse, crate::Error> = self
            .unary(
                address,
                "/grpc.health.v1.Health/Check",
                "Health.Check",
                &HealthCheckRequest {
                    service: grpc_service.to_owned(),
                },
            )
            .options(options.address(address))
            .await;
        match reply {
            Ok(reply) => {
                let status = match ServingStatus::try_from(reply.status) {
                    Ok(ServingStatus::Serving) => HealthStatus::Serving,
                    Ok(ServingStatus::NotServing) => HealthStatus::NotServing,
                    Ok(ServingStatus::ServiceUnknown) => HealthStatus::ServiceUnknown,
                    Ok(ServingStatus::Unknown) | Err(_) => HealthStatus::Unknown,
                };
                let detail = match status {
                    HealthStatus::Serving => String::new(),
                    other => format!("the node answered {other}"),
                };
                HealthAnswer { status, detail }
            }
            Err(err) if err.grpc_code() == crate::Code::NotFound => HealthAnswer {
                status: HealthStatus::ServiceUnknown,
                detail: err.detail,
            },
            Err(err) => HealthAnswer {
                status: HealthStatus::Unreachable,
                detail: err.detail,
            },
        }
    }
}
