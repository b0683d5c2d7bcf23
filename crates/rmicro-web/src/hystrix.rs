//! Circuits from Hystrix event streams: the ones nodes advertise (node metadata
//! `hystrix`, set by `--hystrix-stream-address`) and those given with
//! `--hystrix-stream`. Each stream is read by a task of its own for as long as it
//! is known, reconnecting a second after it breaks; every `HystrixCommand` event
//! updates its circuit and adds a point to its chart.

use crate::fleet::{Circuit, Fleet};
use crate::scrape::{HttpClient, http_client, now_ms};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest event line kept; a stream sending longer ones is read again.
const MAX_LINE: usize = 1 << 20;
/// A circuit whose stream said nothing of it for this long is dropped.
const STALE: Duration = Duration::from_secs(30);

/// One `HystrixCommand` event's fields the dashboard shows.
#[derive(Debug, PartialEq)]
pub(crate) struct CommandEvent {
    pub name: String,
    pub group: String,
    pub open: bool,
    pub error_pct: f64,
    pub requests: u64,
}

/// Reads a `data:` line of a Hystrix stream; `None` for other events and bad JSON.
pub(crate) fn command_event(line: &str) -> Option<CommandEvent> {
    let json = line.strip_prefix("data:")?.trim();
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    if value.get("type")?.as_str()? != "HystrixCommand" {
        return None;
    }
    let name = value.get("name")?.as_str()?.to_owned();
    Some(CommandEvent {
        group: value
            .get("group")
            .and_then(|g| g.as_str())
            .unwrap_or(&name)
            .to_owned(),
        open: value
            .get("isCircuitBreakerOpen")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        error_pct: value
            .get("errorPercentage")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
        requests: value
            .get("requestCount")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        name,
    })
}

/// Puts one event into the fleet.
fn record(fleet: &Fleet, source: &str, event: CommandEvent) {
    let at = now_ms();
    let oldest = at.saturating_sub(u64::try_from(fleet.history().as_millis()).unwrap_or(u64::MAX));
    fleet.update(|state| {
        let circuit = state.circuits.entry(event.name).or_insert_with(|| Circuit {
            group: event.group.clone(),
            open: event.open,
            error_pct: event.error_pct,
            requests: event.requests,
            source: source.to_owned(),
            updated: Instant::now(),
            history: Default::default(),
        });
        circuit.group = event.group;
        circuit.open = event.open;
        circuit.error_pct = event.error_pct;
        circuit.requests = event.requests;
        circuit.source = source.to_owned();
        circuit.updated = Instant::now();
        circuit.history.push_back((at, event.open, event.error_pct));
        while circuit.history.front().is_some_and(|(t, _, _)| *t < oldest) {
            circuit.history.pop_front();
        }
        true
    });
}

/// Reads one stream until it ends or fails.
async fn read_stream(client: &HttpClient, fleet: &Fleet, url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = response.into_body();
    let mut line: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for &byte in data.iter() {
            if byte == b'\n' {
                if let Some(event) = command_event(&String::from_utf8_lossy(&line)) {
                    record(fleet, url, event);
                }
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(byte);
            } else {
                return Err(format!("an event line over {MAX_LINE} bytes"));
            }
        }
    }
    Ok(())
}

/// Keeps a reader on every known stream: `fixed` ones, and those nodes advertise.
pub(crate) async fn follow_streams(fleet: Arc<Fleet>, fixed: Vec<String>) {
    let client = http_client();
    let mut readers: HashMap<String, crate::Task> = HashMap::new();
    let mut changes = fleet.member_changes();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut wanted: Vec<String> = fleet
            .node_urls("hystrix")
            .into_iter()
            .map(|(_, url)| url)
            .chain(fixed.iter().cloned())
            .collect();
        wanted.sort();
        wanted.dedup();
        // A reader dropped is a reader stopped.
        readers.retain(|url, _| wanted.contains(url));
        for url in wanted {
            readers.entry(url.clone()).or_insert_with(|| {
                let (fleet, client) = (fleet.clone(), client.clone());
                crate::Task::spawn(async move {
                    loop {
                        if let Err(err) = read_stream(&client, &fleet, &url).await {
                            tracing::debug!(%url, error = %err, "a Hystrix stream broke; reading it again");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            });
        }
        tokio::select! {
            Ok(()) = changes.changed() => {}
            _ = sweep.tick() => {
                fleet.update(|state| {
                    let before = state.circuits.len();
                    state.circuits.retain(|_, c| c.updated.elapsed() < STALE);
                    state.circuits.len() != before
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_command_events_and_ignores_the_rest() {
        let line = r#"data: {"type":"HystrixCommand","name":"greeter.Greeter.SayHello","group":"greeter","isCircuitBreakerOpen":true,"errorPercentage":62.5,"requestCount":8}"#;
        assert_eq!(
            command_event(line),
            Some(CommandEvent {
                name: "greeter.Greeter.SayHello".into(),
                group: "greeter".into(),
                open: true,
                error_pct: 62.5,
                requests: 8,
            })
        );
        assert_eq!(
            command_event(r#"data: {"type":"HystrixThreadPool","name":"x"}"#),
            None
        );
        assert_eq!(command_event("ping: "), None);
        assert_eq!(command_event("data: {not json"), None);
    }
}
