//! Discovery with real processes: three `greeter` binaries found by name through the
//! embedded local registry and through a real etcd, load-balanced, one killed under
//! load, and etcd stopped for 30 s under load.

mod common;

use common::{local_cluster, wait_for_nodes, wait_until};
use greeter::proto::{GreeterClient, HelloRequest};
use rmicro::registry::Registry;
use rmicro::selector::{Selector, Strategy};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ChildGuard as Node;

/// Starts a `greeter` process on a free port with the given registry flags.
fn spawn_greeter<I, S>(registry_flags: I) -> Node
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Node(
        Command::new(env!("CARGO_BIN_EXE_greeter"))
            .args(["--server-address", "127.0.0.1:0", "--log-level", "error"])
            .args(registry_flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("greeter starts"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_found_by_name_balanced_and_one_killed_under_load() {
    let (dir, registry, flags) = local_cluster("discovery");
    let mut nodes: Vec<Node> = (0..3).map(|_| spawn_greeter(&flags)).collect();
    wait_for_nodes(registry.as_ref(), 3).await;

    let (client, counts, selector) = counted_client(&registry, Strategy::RoundRobin);
    let greeter = GreeterClient::new("greeter", client.clone());
    for i in 0..3000 {
        let reply = greeter
            .say_hello(HelloRequest {
                name: format!("n{i}"),
                count: 0,
            })
            .await
            .unwrap();
        assert_eq!(reply.message, format!("Hello n{i}"));
    }
    let per_node = counts.per_address.lock().unwrap().clone();
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    for (node, n) in &per_node {
        assert!(
            (990..=1010).contains(n),
            "round robin gave {node} {n} of 3000"
        );
    }

    // kill -9 one node while calls are in flight: the caller sees no failure.
    let load = Load::start(&greeter, "w", 300, true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut victim = nodes.remove(0);
    let victim_pid = victim.0.id();
    assert!(
        Command::new("kill")
            .args(["-9", &victim_pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = victim.0.wait();
    let errors = load.finish().await;
    assert!(
        errors.is_empty(),
        "{} failed calls after kill -9: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );

    // The dead node leaves the registry and the selector's cache.
    wait_for_cached(&selector, 2, Duration::from_secs(10)).await;
    let left: usize = registry
        .get_service("greeter")
        .await
        .unwrap()
        .iter()
        .map(|s| s.nodes.len())
        .sum();
    assert_eq!(left, 2);

    // SIGTERM one of the two left under load, with calls that are NOT idempotent:
    // it deregisters, drains, and the caller still sees no failure.
    let load = Load::start(&greeter, "t", 600, false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut leaving = nodes.remove(0);
    assert!(
        Command::new("kill")
            .args(["-TERM", &leaving.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let errors = load.finish().await;
    let status = leaving.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful exit");
    assert!(
        errors.is_empty(),
        "{} failed calls after SIGTERM: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let left: usize = registry
        .get_service("greeter")
        .await
        .unwrap()
        .iter()
        .map(|s| s.nodes.len())
        .sum();
    assert_eq!(left, 1, "the stopped node deregistered");
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}

/// A client finding greeters through `registry` with `strategy`, counting the calls
/// each node gets.
fn counted_client(
    registry: &Arc<dyn Registry>,
    strategy: Strategy,
) -> (rmicro::Client, common::Tap, Arc<Selector>) {
    let selector = Arc::new(Selector::new(registry.clone(), strategy));
    let counts = common::Tap::default();
    let options = rmicro::client::ClientOptions::default().wrap_call(counts.clone());
    let client = rmicro::Client::with_selector(options, selector.clone());
    (client, counts, selector)
}

/// Waits until the caller's selector cache holds `n` greeter nodes.
async fn wait_for_cached(selector: &Selector, n: usize, limit: Duration) {
    wait_until(
        &format!("the caller's cache holds {n} greeter nodes"),
        limit,
        || {
            futures_util::FutureExt::now_or_never(selector.nodes("greeter"))
                .and_then(Result::ok)
                .is_some_and(|nodes| nodes.len() == n)
        },
    )
    .await;
}

/// Eight workers calling `SayHello` in a loop, collecting failures.
struct Load {
    workers: Vec<tokio::task::JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
    succeeded: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Load {
    /// Starts `calls` calls per worker (until [`Load::stop`] for `usize::MAX`), each
    /// worker pausing `pace` between calls; `idempotent` calls may be retried
    /// anywhere, others only where the handler cannot have run.
    fn start(greeter: &GreeterClient, tag: &'static str, calls: usize, idempotent: bool) -> Self {
        Self::paced(greeter, tag, calls, idempotent, Duration::ZERO)
    }

    fn paced(
        greeter: &GreeterClient,
        tag: &'static str,
        calls: usize,
        idempotent: bool,
        pace: Duration,
    ) -> Self {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let succeeded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..8)
            .map(|w| {
                let (greeter, errors) = (greeter.clone(), errors.clone());
                let (succeeded, stop) = (succeeded.clone(), stop.clone());
                tokio::spawn(async move {
                    for i in 0..calls {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        if !pace.is_zero() {
                            tokio::time::sleep(pace).await;
                        }
                        let call = greeter.say_hello(HelloRequest {
                            name: format!("{tag}{w}-{i}"),
                            count: 0,
                        });
                        let call = if idempotent {
                            call.idempotent().retries(3)
                        } else {
                            call.retries(2)
                        };
                        match call.await {
                            Ok(_) => {
                                succeeded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(err) => errors.lock().unwrap().push(err.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            workers,
            errors,
            succeeded,
            stop,
        }
    }

    /// Calls that succeeded so far.
    fn succeeded(&self) -> usize {
        self.succeeded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tells the workers to stop after their current call.
    fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for every worker; returns the failures.
    async fn finish(self) -> Vec<String> {
        for w in self.workers {
            w.await.unwrap();
        }
        self.errors.lock().unwrap().clone()
    }
}

/// Counts, per node, the calls made through `client` by `calls`.
async fn calls_per_node(
    client: &rmicro::Client,
    counts: &common::Tap,
    calls: impl IntoIterator<Item = Option<String>>,
) -> HashMap<String, usize> {
    counts.per_address.lock().unwrap().clear();
    let greeter = GreeterClient::new("greeter", client.clone());
    for key in calls {
        let call = greeter.say_hello(HelloRequest {
            name: "x".into(),
            count: 0,
        });
        let call = match key {
            Some(key) => call.hash_key(key),
            None => call,
        };
        call.await.expect("call succeeds");
    }
    counts.per_address.lock().unwrap().clone()
}

/// Which node each of `keys` goes to under the hash strategy (one call per key).
async fn placement(client: &rmicro::Client, counts: &common::Tap, keys: &[String]) -> Vec<String> {
    let mut placed = Vec::new();
    for key in keys {
        let per_node = calls_per_node(client, counts, [Some(key.clone())]).await;
        placed.push(per_node.into_keys().next().expect("one node got the call"));
    }
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_evenly_and_hash_is_sticky_and_moves_few_keys() {
    let (dir, registry, flags) = local_cluster("strategies");
    let mut nodes: Vec<Node> = (0..3).map(|_| spawn_greeter(&flags)).collect();
    wait_for_nodes(registry.as_ref(), 3).await;
    let client_with = |strategy| counted_client(&registry, strategy);

    // random: 3,000 calls over 3 nodes pass a chi-square test (2 degrees of freedom;
    // 18.42 is the p = 0.0001 critical value, so a fair selector fails 1 run in 10,000).
    let (client, counts, _) = client_with(Strategy::Random);
    let per_node = calls_per_node(&client, &counts, (0..3000).map(|_| None)).await;
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    let chi_square: f64 = per_node
        .values()
        .map(|&observed| (observed as f64 - 1000.0).powi(2) / 1000.0)
        .sum();
    eprintln!("random: {per_node:?}, chi-square {chi_square:.2}");
    assert!(
        chi_square < 18.42,
        "random is skewed: {per_node:?}, chi-square {chi_square:.2}"
    );

    // hash: 300 keys, 10 calls each (3,000 calls): every key always lands on one node.
    let (client, counts, selector) = client_with(Strategy::Hash);
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let before = placement(&client, &counts, &keys).await;
    for _ in 0..9 {
        assert_eq!(
            placement(&client, &counts, &keys).await,
            before,
            "hash is not sticky"
        );
    }
    let mut spread: HashMap<&str, usize> = HashMap::new();
    for node in &before {
        *spread.entry(node.as_str()).or_default() += 1;
    }
    assert_eq!(spread.len(), 3, "keys spread over all nodes: {spread:?}");

    // One node leaves: only its keys move (about 1/3); every other key stays put.
    let mut leaving = nodes.remove(0);
    assert!(
        Command::new("kill")
            .args(["-TERM", &leaving.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = leaving.0.wait();
    wait_for_cached(&selector, 2, Duration::from_secs(10)).await;
    let after = placement(&client, &counts, &keys).await;
    let gone: std::collections::HashSet<&String> = before
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .difference(&after.iter().collect())
        .copied()
        .collect();
    assert_eq!(
        gone.len(),
        1,
        "exactly the departed node lost keys: {gone:?}"
    );
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let on_departed = before.iter().filter(|b| gone.contains(b)).count();
    eprintln!("hash: {moved} of 300 keys moved when 1 of 3 nodes left");
    assert_eq!(moved, on_departed, "keys of surviving nodes moved");

    // A node joins: the keys that move all move to it, about 1/3 of them.
    nodes.push(spawn_greeter(&flags));
    wait_for_cached(&selector, 3, Duration::from_secs(10)).await;
    let joined = placement(&client, &counts, &keys).await;
    let moved: Vec<&String> = after
        .iter()
        .zip(&joined)
        .filter(|(a, j)| a != j)
        .map(|(_, j)| j)
        .collect();
    eprintln!(
        "hash: {} of 300 keys moved when a third node joined",
        moved.len()
    );
    assert!(
        moved.windows(2).all(|w| w[0] == w[1]) && moved.iter().all(|m| !after.contains(m)),
        "keys moved elsewhere than to the new node"
    );
    assert!(
        (30..=160).contains(&moved.len()),
        "{} of 300 keys moved to the new node (expected about 100)",
        moved.len()
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_30s_under_load_calls_go_on_from_the_cache_and_it_resyncs() {
    let Some(mut etcd) = rmicro::etcd::testing::EtcdServer::start_or_skip("etcd_stopped_30s").await
    else {
        return;
    };
    let address = etcd.address();
    let flags = |ttl: &str| {
        [
            "--registry",
            "etcd",
            "--registry-address",
            address.as_str(),
            "--register-ttl",
            ttl,
            "--register-interval",
            "2s",
        ]
        .map(String::from)
    };
    let mut nodes: Vec<Node> = (0..3).map(|_| spawn_greeter(flags("10s"))).collect();
    let registry: Arc<dyn Registry> =
        Arc::new(rmicro::etcd::EtcdRegistry::new(&address).expect("etcd address"));
    wait_for_nodes(registry.as_ref(), 3).await;

    let (client, _, selector) = counted_client(&registry, Strategy::Random);
    let greeter = GreeterClient::new("greeter", client);
    let load = Load::paced(&greeter, "e", usize::MAX, false, Duration::from_millis(5));
    wait_until("calls flow", Duration::from_secs(10), || {
        load.succeeded() > 100
    })
    .await;

    // etcd goes away for 30 s; the greeters' heartbeats fail, the caller's watch
    // breaks, and calls keep being served from the selector's cache.
    etcd.stop();
    let before = load.succeeded();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = load.succeeded() - before;
    assert!(
        during > 1000,
        "only {during} calls succeeded while etcd was down"
    );
    assert!(
        load.errors.lock().unwrap().is_empty(),
        "calls failed while etcd was down: {:?}",
        &load.errors.lock().unwrap()[..1]
    );

    // etcd returns: the registrations are still (or again) there, and the caller's
    // cache follows new changes again — a fourth node started now gets calls.
    etcd.resume().await.expect("etcd restarts");
    wait_for_nodes(registry.as_ref(), 3).await;
    nodes.push(spawn_greeter(flags("10s")));
    wait_for_nodes(registry.as_ref(), 4).await;
    wait_for_cached(&selector, 4, Duration::from_secs(30)).await;
    load.stop();
    let total = load.succeeded();
    let errors = load.finish().await;
    assert!(
        errors.is_empty(),
        "{} of {total} calls failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_greeters_are_found_by_name_and_a_killed_one_leaves_within_its_ttl() {
    // No Consul can run here: the greeters talk to the agent double over HTTP.
    let consul = rmicro::consul::testing::ConsulDouble::start()
        .await
        .expect("double starts");
    let address = consul.address();
    let flags = [
        "--registry",
        "consul",
        "--registry-address",
        address.as_str(),
        "--register-ttl",
        "2s",
        "--register-interval",
        "500ms",
    ];
    let mut nodes: Vec<Node> = (0..3).map(|_| spawn_greeter(flags)).collect();
    let registry: Arc<dyn Registry> =
        Arc::new(rmicro::consul::ConsulRegistry::new(&address).expect("address"));
    wait_for_nodes(registry.as_ref(), 3).await;

    let (client, counts, selector) = counted_client(&registry, Strategy::RoundRobin);
    let greeter = GreeterClient::new("greeter", client);
    let errors = Load::start(&greeter, "c", 30, false).finish().await;
    assert!(errors.is_empty(), "{errors:?}");
    let per_node = counts.per_address.lock().unwrap().clone();
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(per_node.values().all(|n| *n == 80), "{per_node:?}");

    // kill -9: no deregistration, no more heartbeats; its TTL check goes critical
    // and the node leaves the passing set, the watch and the caller's cache.
    let mut victim = nodes.remove(0);
    let _ = victim.0.kill();
    let _ = victim.0.wait();
    wait_for_cached(&selector, 2, Duration::from_secs(10)).await;
    assert_eq!(
        registry
            .get_service("greeter")
            .await
            .expect("get")
            .iter()
            .map(|s| s.nodes.len())
            .sum::<usize>(),
        2
    );
    let errors = Load::start(&greeter, "d", 20, false).finish().await;
    assert!(errors.is_empty(), "{errors:?}");
    drop(nodes);
}
