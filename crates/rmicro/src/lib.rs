//! rmicro: a microservice framework for Rust in the spirit of go-micro.
//!
//! This crate is what an application depends on: the whole of the core
//! (re-exported from `rmicro-core`, so every path is `rmicro::…`) plus the
//! registry, config-center and broker adapters its cargo features name:
//!
//! ```toml
//! [dependencies]
//! rmicro = { version = "0.1", features = ["etcd", "nats"] }
//! ```
//!
//! makes `--registry etcd`, `--config-source etcd://…` and `--broker nats` work in
//! every binary of the application with no start-up call: each adapter adds itself
//! to a table the linker collects ([`static@registry::REGISTRIES`], [`static@broker::BROKERS`],
//! [`static@config::source::SOURCES`]). Features: `etcd`, `consul`, `mdns` (registries;
//! etcd and Consul also config centers), `nats`, `redis`, `rabbitmq`, `mqtt`
//! (brokers), `auth` (JWT service auth), `db` (SeaORM databases),
//! `full` (all of them). Without any, the embedded defaults remain: the
//! `local` and `memory` registries, the `memory` broker, file and environment
//! config. An enabled adapter's own types are under its name, e.g.
//! [`etcd::EtcdRegistry`](https://docs.rs/rmicro-etcd).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let service = match rmicro::Service::builder("greeter").version("1.0.0").build() {
//!     Ok(service) => service,
//!     Err(err) => err.exit(), // --help, or a flag it could not use: a sentence and exit 2
//! };
//! service.run().await?; // serves until SIGINT/SIGTERM, then shuts down gracefully
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub use rmicro_core::*;

/// etcd: `--registry etcd` and `--config-source etcd://…` (feature `etcd`).
#[cfg(feature = "etcd")]
pub use rmicro_etcd as etcd;

/// Consul: `--registry consul` and `--config-source consul://…` (feature `consul`).
#[cfg(feature = "consul")]
pub use rmicro_consul as consul;

/// Multicast DNS on the local network: `--registry mdns` (feature `mdns`).
#[cfg(feature = "mdns")]
pub use rmicro_mdns as mdns;

/// NATS with JetStream: `--broker nats` (feature `nats`).
#[cfg(feature = "nats")]
pub use rmicro_nats as nats;

/// Redis streams: `--broker redis` (feature `redis`).
#[cfg(feature = "redis")]
pub use rmicro_redis as redis;

/// RabbitMQ (AMQP 0-9-1): `--broker rabbitmq` (feature `rabbitmq`).
#[cfg(feature = "rabbitmq")]
pub use rmicro_rabbitmq as rabbitmq;

/// MQTT: `--broker mqtt` (feature `mqtt`).
#[cfg(feature = "mqtt")]
pub use rmicro_mqtt as mqtt;

/// Databases on SeaORM: the seed's `mysql` section, migrations, errors as gRPC
/// statuses, health that follows the database (feature `db`).
#[cfg(feature = "db")]
pub use rmicro_db as db;
