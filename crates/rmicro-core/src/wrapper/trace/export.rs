//! Sending finished spans to an OTLP collector without ever holding a call up.
//!
//! A span is encoded to OTLP by the thread that ends it, into a bounded queue (a
//! short lock: a call never waits for the exporter); when the queue is full the
//! span is dropped and counted. One thread of its own, with a small runtime,
//! takes the queue whole on a tick and exports it in batches over OTLP (gRPC or
//! HTTP/protobuf), so a slow or absent collector costs the service's calls
//! nothing, and no span object is made on one thread and freed on another.

use super::otlp::{self, SpanView};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the exporter did, for the service's metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    dropped: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
}

impl ExportStats {
    /// Spans dropped because the queue was full (or the exporter had stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans lost to failed exports (the collector refused or was unreachable).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// How spans are batched (the `OTEL_BSP_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Spans held at most; more are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048).
    pub max_queue: usize,
    /// Spans per export at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_batch: usize,
    /// How long a span waits for its batch at most (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub delay: Duration,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s).
    pub timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

enum Control {
    /// Export everything queued, then answer.
    Flush(oneshot::Sender<()>),
    /// Export everything queued, answer, and stop.
    Shutdown(oneshot::Sender<()>),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Flush(_) => "Flush",
            Control::Shutdown(_) => "Shutdown",
        })
    }
}

/// Where encoded batches go: the OTLP collector (or a test's keeper).
pub(crate) trait Collector: 'static {
    /// Sends one `ExportTraceServiceRequest`; the error says why it failed.
    fn export(&self, request: Vec<u8>) -> impl Future<Output = Result<(), String>>;
}

/// Ended spans of one instrumentation scope, already encoded.
#[derive(Debug)]
struct Scoped {
    scope: InstrumentationScope,
    /// The scope's `InstrumentationScope` message, encoded once.
    encoded: Vec<u8>,
    /// Its spans as `ScopeSpans.spans` fields, one after another.
    spans: Vec<u8>,
    /// Where each span ends in `spans`.
    ends: Vec<usize>,
}

impl Scoped {
    fn new(scope: &InstrumentationScope) -> Self {
        Scoped {
            scope: scope.clone(),
            encoded: otlp::scope_body(scope),
            spans: Vec::new(),
            ends: Vec::new(),
        }
    }
}

/// The queue between the threads that end spans and the export thread.
#[derive(Debug, Default)]
struct Queued {
    scopes: Vec<Scoped>,
    /// Spans queued, over every scope.
    count: usize,
    /// When the oldest queued span was queued.
    first: Option<std::time::Instant>,
    /// Spans the export thread has taken and not yet sent.
    taken: usize,
    /// The export thread has stopped: spans are dropped.
    closed: bool,
}

impl Queued {
    /// An empty queue whose first scope is `own`'s.
    fn new(own: &InstrumentationScope) -> Self {
        Queued {
            scopes: vec![Scoped::new(own)],
            ..Queued::default()
        }
    }

    /// Empties the queue, keeping its buffers for the next turn.
    fn clear(&mut self) {
        for scoped in &mut self.scopes {
            scoped.spans.clear();
            scoped.ends.clear();
        }
        self.count = 0;
        self.first = None;
    }
}

/// Ended spans waiting for export, encoded to OTLP by the thread that ended them
/// (under a short lock, into one buffer per scope): no span object crosses to the
/// export thread, which takes the buffers whole on its tick.
///
/// It holds `max_queue` spans waiting at most, and, with those the export thread
/// has taken and not yet sent, `max_queue + max_batch` in all (as the SDK's batch
/// processor: a full queue and the batch being exported).
#[derive(Debug)]
pub(crate) struct Spool {
    queued: Mutex<Queued>,
    max_queue: usize,
    max_held: usize,
    stats: Arc<ExportStats>,
}

impl Spool {
    /// Queues `span` of `scope` (`None`: rmicro's own, the spool's first), or
    /// counts it dropped when the queue holds `max_queue` spans already or the
    /// exporter has stopped. Never waits for the exporter.
    pub(crate) fn push(&self, scope: Option<&InstrumentationScope>, span: &SpanView<'_>) {
        let mut queued = self.lock();
        if queued.closed
            || queued.count >= self.max_queue
            || queued.count + queued.taken >= self.max_held
        {
            drop(queued);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if queued.count == 0 {
            queued.first = Some(std::time::Instant::now());
        }
        queued.count += 1;
        let at = match scope {
            None => 0,
            Some(scope) => match queued.scopes.iter().position(|s| s.scope == *scope) {
                Some(at) => at,
                None => {
                    queued.scopes.push(Scoped::new(scope));
                    queued.scopes.len() - 1
                }
            },
        };
        let scoped = &mut queued.scopes[at];
        otlp::put_span(&mut scoped.spans, span);
        scoped.ends.push(scoped.spans.len());
    }

    /// A queue of its own, for tests of what is pushed into it.
    #[cfg(test)]
    pub(crate) fn for_tests(
        own: &InstrumentationScope,
        max_queue: usize,
    ) -> (Arc<Spool>, Arc<ExportStats>) {
        let stats = Arc::new(ExportStats::default());
        let spool = Spool {
            queued: Mutex::new(Queued::new(own)),
            max_queue,
            max_held: max_queue,
            stats: stats.clone(),
        };
        (Arc::new(spool), stats)
    }

    /// Everything queued, taken out as one request and decoded by
    /// opentelemetry-proto's types.
    #[cfg(test)]
    pub(crate) fn take_decoded(
        &self,
    ) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        use prost::Message as _;
        let mut queued = self.lock();
        let parts: Vec<otlp::ScopeSpans<'_>> = queued
            .scopes
            .iter()
            .map(|s| otlp::ScopeSpans {
                scope: &s.encoded,
                schema_url: "",
                spans: &s.spans,
            })
            .collect();
        let mut out = Vec::new();
        otlp::request(&[], "", &parts, &mut out);
        drop(parts);
        queued.clear();
        let decoded = prost::Message::decode(out.as_slice()).expect("valid OTLP");
        assert_eq!(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::encode_to_vec(&decoded),
            out,
            "prost writes the same bytes"
        );
        decoded
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The span processor: spools ended, sampled spans for the export thread.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    spool: Arc<Spool>,
    control: mpsc::UnboundedSender<Control>,
    stopped: AtomicBool,
    timeout: Duration,
}

impl QueueProcessor {
    /// Starts the export thread for spans of `resource`, rmicro's own under
    /// `own`; `make` builds the collector on that thread's runtime (tonic's
    /// channel needs one). A collector that cannot be built is the error, as a
    /// sentence.
    pub(crate) fn start<C, M>(
        settings: BatchSettings,
        resource: &Resource,
        own: &InstrumentationScope,
        make: M,
    ) -> Result<(Self, Arc<ExportStats>), String>
    where
        C: Collector,
        M: FnOnce() -> Result<C, String> + Send + 'static,
    {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ExportStats::default());
        let spool = Arc::new(Spool {
            queued: Mutex::new(Queued::new(own)),
            max_queue: settings.max_queue.max(1),
            max_held: settings.max_queue.max(1) + settings.max_batch.max(1),
            stats: stats.clone(),
        });
        let resource = otlp::resource_body(resource);
        let spare = Queued::new(own);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_spool = spool.clone();
        std::thread::Builder::new()
            .name("rmicro-otlp".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(format!("no runtime for the exporter: {err}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let collector = match make() {
                        Ok(collector) => collector,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let exporter = Exporter {
                        collector,
                        settings,
                        resource,
                        stats: thread_spool.stats.clone(),
                    };
                    run(exporter, &thread_spool, spare, control_rx).await;
                    thread_spool.lock().closed = true;
                });
            })
            .map_err(|e| format!("cannot start the exporter thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the exporter thread stopped while starting".to_owned())??;
        Ok((
            QueueProcessor {
                spool,
                control: control_tx,
                stopped: AtomicBool::new(false),
                timeout: settings.timeout,
            },
            stats,
        ))
    }

    /// The queue spans are encoded into, for rmicro's own spans.
    pub(crate) fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Asks the thread to export what is queued; the answer comes on the receiver.
    fn ask(&self, shutdown: bool) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        let control = if shutdown {
            Control::Shutdown(tx)
        } else {
            Control::Flush(tx)
        };
        self.control.send(control).ok().map(|()| rx)
    }

    /// Exports what is queued, waiting `within` at most; false if it took longer.
    pub(crate) async fn flush(&self, within: Duration) -> bool {
        match self.ask(false) {
            Some(rx) => matches!(tokio::time::timeout(within, rx).await, Ok(Ok(()))),
            None => false,
        }
    }

    /// Waits for the thread's answer without a runtime (the SDK's sync calls).
    fn wait(&self, rx: Option<oneshot::Receiver<()>>, within: Duration) -> OTelSdkResult {
        let Some(rx) = rx else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let deadline = std::time::Instant::now() + within;
        let mut rx = rx;
        loop {
            match rx.try_recv() {
                Ok(()) => return Ok(()),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(OTelSdkError::InternalFailure(
                        "the exporter thread stopped".into(),
                    ));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if std::time::Instant::now() >= deadline {
                return Err(OTelSdkError::Timeout(within));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        self.spool
            .push(Some(&span.instrumentation_scope), &SpanView::from(&span));
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.wait(self.ask(false), self.timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.wait(self.ask(true), timeout)
    }
}

/// The export thread's loop: the queue is taken when it holds a batch's worth,
/// when its oldest span has waited `delay`, or when asked. It is looked at on a
/// tick rather than awaited, so a call ending a span never wakes this thread:
/// every 5 ms while spans wait, every 50 ms when none do.
async fn run<C: Collector>(
    exporter: Exporter<C>,
    spool: &Spool,
    mut spare: Queued,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let busy = Duration::from_millis(5);
    let idle = Duration::from_millis(50);
    let mut tick = idle;
    // `spare`: the buffers not in the queue, swapped in when the queue is taken.
    loop {
        let asked = tokio::select! {
            biased;
            asked = control.recv() => match asked {
                Some(asked) => Some(asked),
                // The processor is gone: send what is queued and stop.
                None => Some(Control::Shutdown(oneshot::channel().0)),
            },
            () = tokio::time::sleep(tick) => None,
        };
        {
            let mut queued = spool.lock();
            let due = queued
                .first
                .is_some_and(|first| first.elapsed() >= exporter.settings.delay);
            let take = queued.count > 0
                && (asked.is_some() || due || queued.count >= exporter.settings.max_batch);
            if matches!(asked, Some(Control::Shutdown(_))) {
                queued.closed = true;
            }
            tick = if queued.count > 0 { busy } else { idle };
            if take {
                std::mem::swap(&mut *queued, &mut spare);
                queued.closed = spare.closed;
                queued.taken = spare.count;
            }
        }
        if spare.count > 0 {
            exporter.export(&spare, spool).await;
            spare.clear();
        }
        match asked {
            Some(Control::Flush(done)) => {
                let _ = done.send(());
            }
            Some(Control::Shutdown(done)) => {
                let _ = done.send(());
                return;
            }
            None => {}
        }
    }
}

/// The export thread's side: the collector and what every request carries.
struct Exporter<C> {
    collector: C,
    settings: BatchSettings,
    /// The resource's encoded attributes and its schema URL.
    resource: (Vec<u8>, String),
    stats: Arc<ExportStats>,
}

impl<C: Collector> Exporter<C> {
    /// Sends `queued` in requests of `max_batch` spans at most, giving the
    /// spool back room for each as it is sent.
    async fn export(&self, queued: &Queued, spool: &Spool) {
        let max = self.settings.max_batch.max(1);
        let mut parts: Vec<otlp::ScopeSpans<'_>> = Vec::new();
        let mut n = 0;
        for scoped in &queued.scopes {
            let (mut from, mut k) = (0, 0);
            while k < scoped.ends.len() {
                let take = (max - n).min(scoped.ends.len() - k);
                let to = scoped.ends[k + take - 1];
                parts.push(otlp::ScopeSpans {
                    scope: &scoped.encoded,
                    schema_url: scoped.scope.schema_url().unwrap_or(""),
                    spans: &scoped.spans[from..to],
                });
                (n, k, from) = (n + take, k + take, to);
                if n == max {
                    self.send(&parts, n).await;
                    spool.lock().taken -= n;
                    parts.clear();
                    n = 0;
                }
            }
        }
        if n > 0 {
            self.send(&parts, n).await;
            spool.lock().taken -= n;
        }
    }

    async fn send(&self, parts: &[otlp::ScopeSpans<'_>], n: usize) {
        let mut request = Vec::new();
        otlp::request(&self.resource.0, &self.resource.1, parts, &mut request);
        let n = n as u64;
        let stats = &self.stats;
        match tokio::time::timeout(self.settings.timeout, self.collector.export(request)).await {
            Ok(Ok(())) => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(err)) => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(spans = n, error = %err, "tracing: the collector refused a batch");
            }
            Err(_) => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(spans = n, timeout = ?self.settings.timeout, "tracing: exporting a batch timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use std::sync::Mutex;

    /// An exporter that keeps what it gets and can be held up.
    #[derive(Debug, Clone)]
    struct Keeper {
        /// Each span's scope and name, in the order they came.
        got: Arc<Mutex<Vec<(String, String)>>>,
        /// Spans per request.
        requests: Arc<Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Default for Keeper {
        fn default() -> Self {
            Keeper {
                got: Arc::default(),
                requests: Arc::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(0)),
            }
        }
    }

    impl Collector for Keeper {
        async fn export(&self, request: Vec<u8>) -> Result<(), String> {
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
            use prost::Message as _;
            let _permit = self.gate.acquire().await;
            let request = ExportTraceServiceRequest::decode(request.as_slice())
                .map_err(|e| format!("not OTLP: {e}"))?;
            let mut got = self.got.lock().unwrap();
            let before = got.len();
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    let name = scope.scope.map(|s| s.name).unwrap_or_default();
                    got.extend(scope.spans.into_iter().map(|s| (name.clone(), s.name)));
                }
            }
            self.requests.lock().unwrap().push(got.len() - before);
            Ok(())
        }
    }

    fn rmicro() -> InstrumentationScope {
        InstrumentationScope::builder("rmicro").build()
    }

    fn provider(
        keeper: Keeper,
        settings: BatchSettings,
    ) -> (
        opentelemetry_sdk::trace::SdkTracerProvider,
        Arc<ExportStats>,
    ) {
        let resource = Resource::builder_empty().build();
        let (processor, stats) =
            QueueProcessor::start(settings, &resource, &rmicro(), move || Ok(keeper)).unwrap();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        (provider, stats)
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_never_waits() {
        let keeper = Keeper::default();
        // Held: the thread takes one batch and waits in it.
        let settings = BatchSettings {
            max_queue: 10,
            max_batch: 5,
            delay: Duration::from_millis(10),
            timeout: Duration::from_secs(10),
        };
        let (provider, stats) = provider(keeper.clone(), settings);
        let tracer = provider.tracer("t");
        let started = std::time::Instant::now();
        for i in 0..1000 {
            tracer.start(format!("s{i}")).end();
        }
        // Nothing waited on the stuck exporter: 1,000 spans in far less than a batch timeout.
        assert!(started.elapsed() < Duration::from_secs(5));
        let dropped = stats.dropped();
        // At most the queue plus one batch in the exporter's hands got through.
        assert!(dropped >= 1000 - 10 - 5, "dropped {dropped}");
        keeper.gate.add_permits(1000);
        assert!(provider.force_flush().is_ok());
        let got = keeper.got.lock().unwrap().len() as u64;
        assert_eq!(
            got + dropped,
            1000,
            "every span exported or counted as dropped"
        );
        assert_eq!(stats.exported(), got);
    }

    #[tokio::test]
    async fn shutdown_exports_what_is_queued_at_once() {
        let keeper = Keeper::default();
        keeper.gate.add_permits(1000);
        let settings = BatchSettings {
            delay: Duration::from_secs(3600),
            ..BatchSettings::default()
        };
        let (provider, stats) = provider(keeper.clone(), settings);
        let tracer = provider.tracer("t");
        for i in 0..100 {
            let mut span = tracer.start(format!("s{i}"));
            span.set_attribute(opentelemetry::KeyValue::new("i", i));
            span.end();
        }
        // The delay is an hour: only the shutdown's flush can send them.
        assert!(provider.shutdown().is_ok());
        assert_eq!(keeper.got.lock().unwrap().len(), 100);
        assert_eq!(stats.exported(), 100);
        assert_eq!(stats.dropped(), 0);
    }

    #[tokio::test]
    async fn batches_hold_max_batch_spans_and_keep_each_scope_apart() {
        let keeper = Keeper::default();
        keeper.gate.add_permits(1000);
        let settings = BatchSettings {
            max_batch: 3,
            delay: Duration::from_secs(3600),
            ..BatchSettings::default()
        };
        let (provider, stats) = provider(keeper.clone(), settings);
        let (a, b) = (provider.tracer("a"), provider.tracer("b"));
        for i in 0..4 {
            a.start(format!("a{i}")).end();
            b.start(format!("b{i}")).end();
        }
        assert!(provider.force_flush().is_ok());
        let got = keeper.got.lock().unwrap().clone();
        let mut want: Vec<(String, String)> = (0..4)
            .map(|i| ("a".to_owned(), format!("a{i}")))
            .chain((0..4).map(|i| ("b".to_owned(), format!("b{i}"))))
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        want.sort();
        assert_eq!(sorted, want, "every span once, under its own scope");
        assert_eq!(*keeper.requests.lock().unwrap(), [3, 3, 2]);
        assert_eq!(stats.exported(), 8);
        assert!(provider.shutdown().is_ok());
    }

    #[tokio::test]
    async fn spans_ended_after_shutdown_are_dropped_and_counted() {
        use super::super::span::RecordedSpan;
        use opentelemetry::trace::{
            Span as _, SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState,
        };
        let keeper = Keeper::default();
        keeper.gate.add_permits(1000);
        let resource = Resource::builder_empty().build();
        let (processor, stats) =
            QueueProcessor::start(BatchSettings::default(), &resource, &rmicro(), move || {
                Ok(keeper)
            })
            .unwrap();
        let spool = processor.spool();
        let span = |i: u64| {
            let context = SpanContext::new(
                TraceId::from(1_u128),
                SpanId::from(i),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            );
            RecordedSpan::start(
                spool.clone(),
                context,
                None,
                "op".into(),
                SpanKind::Server,
                super::super::otlp::Attributes::default(),
            )
        };
        let (mut before, late) = (span(1), span(2));
        before.end();
        assert!(
            processor
                .shutdown_with_timeout(Duration::from_secs(10))
                .is_ok()
        );
        assert_eq!(stats.exported(), 1, "what was queued went at shutdown");
        drop(late);
        assert_eq!(stats.dropped(), 1, "the span ended after it is counted");
        assert_eq!(stats.exported(), 1);
    }
}
