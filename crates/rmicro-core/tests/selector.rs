//! The selector's caches are bounded: calls to thousands of distinct names (a
//! gateway's load) keep a bounded number of caches and registry watches.

extern crate rmicro_core as rmicro;

use futures_util::future::BoxFuture;
use rmicro::registry::{MemoryRegistry, Registry, RegistryError, Service, Watcher};
use rmicro::selector::{SelectOptions, Selector, Strategy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A memory registry that counts the watch streams alive.
struct CountingWatches {
    inner: MemoryRegistry,
    live: Arc<AtomicUsize>,
}

struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Registry for CountingWatches {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn register(
        &self,
        service: &Service,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.inner.register(service, ttl)
    }

    fn deregister(&self, service: &Service) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.inner.deregister(service)
    }

    fn get_service(&self, name: &str) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        self.inner.get_service(name)
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        self.inner.list_services()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, RegistryError>> {
        let service = service.map(str::to_owned);
        let live = self.live.clone();
        Box::pin(async move {
            let events = self.inner.watch(service.as_deref()).await?;
            live.fetch_add(1, Ordering::SeqCst);
            let guard = Live(live);
            let events: Watcher = Box::pin(futures_util::StreamExt::map(events, move |e| {
                let _keep = &guard;
                e
            }));
            Ok(events)
        })
    }
}

#[tokio::test]
async fn caches_and_watches_stay_bounded_under_many_distinct_names() {
    let live = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(CountingWatches {
        inner: MemoryRegistry::new(),
        live: live.clone(),
    });
    let selector =
        Selector::new(registry, Strategy::Random).with_limits(8, Duration::from_secs(600));
    for i in 0..200 {
        // No such service: the call fails, but a cache (and its watch) was made.
        assert!(
            selector
                .select(&format!("svc-{i}"), &SelectOptions::default())
                .await
                .is_err()
        );
        assert!(selector.cached_services() <= 8);
    }
    assert_eq!(selector.cached_services(), 8);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while live.load(Ordering::SeqCst) > 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} registry watches alive for 8 cached services",
            live.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn idle_caches_make_room_before_busy_ones() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let selector =
        Selector::new(registry, Strategy::Random).with_limits(2, Duration::from_millis(50));
    let options = SelectOptions::default();
    let _ = selector.select("old", &options).await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    let _ = selector.select("busy", &options).await;
    let _ = selector.select("new", &options).await;
    assert_eq!(selector.cached_services(), 2);
    assert!(selector.is_cached("busy") && selector.is_cached("new"));
    assert!(
        !selector.is_cached("old"),
        "the idle cache should have made room"
    );
}
