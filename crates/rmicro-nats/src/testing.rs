//! Test support: the NATS server every machine of this project runs on
//! 127.0.0.1:4222 (JetStream on), reached or reported.

use crate::NatsBroker;
use rmicro::broker::Broker;

/// The machine's NATS (`nats://127.0.0.1:4222`).
pub const SHARED_ADDRESS: &str = "nats://127.0.0.1:4222";

/// A JetStream broker on the machine's NATS, or — when it is not reachable — a
/// failure under `CI=true`, otherwise a printed skip of `test` and `None`.
pub async fn shared_or_skip(test: &str) -> Option<NatsBroker> {
    let broker = NatsBroker::jetstream(SHARED_ADDRESS);
    match broker.connect().await {
        Ok(()) => Some(broker),
        Err(err) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "NATS is not reachable at {SHARED_ADDRESS} and CI=true: {err}"
            );
            eprintln!("SKIPPED {test}: NATS is not reachable at {SHARED_ADDRESS} ({err})");
            None
        }
    }
}
