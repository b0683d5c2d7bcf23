//! Sending finished spans to an OTLP collector without ever holding a call up.
//!
//! Ended spans go into a bounded queue (`try_send`: a call never waits for it);
//! when it is full the span is dropped and counted. One thread of its own, with a
//! small runtime, takes them out in batches and exports them over OTLP (gRPC or
//! HTTP/protobuf), so a slow or absent collector costs the service's calls nothing.

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The span processor: queues ended, sampled spans for the export thread.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<ExportStats>,
    stopped: AtomicBool,
    timeout: Duration,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Flush(_) => "Flush",
            Control::Shutdown(_) => "Shutdown",
        })
    }
}

impl QueueProcessor {
    /// Starts the export thread; `make` builds the exporter on that thread's
    /// runtime (tonic's channel needs one). An exporter that cannot be built is
    /// the error, as a sentence.
    pub(crate) fn start<E, M>(
        settings: BatchSettings,
        make: M,
    ) -> Result<(Self, Arc<ExportStats>), String>
    where
        E: SpanExporter + 'static,
        M: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (spans_tx, spans_rx) = mpsc::channel(settings.max_queue.max(1));
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ExportStats::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_stats = stats.clone();
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
                    let exporter = match make() {
                        Ok(exporter) => exporter,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    run(exporter, spans_rx, control_rx, settings, thread_stats).await;
                });
            })
            .map_err(|e| format!("cannot start the exporter thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the exporter thread stopped while starting".to_owned())??;
        Ok((
            QueueProcessor {
                spans: spans_tx,
                control: control_tx,
                stats: stats.clone(),
                stopped: AtomicBool::new(false),
                timeout: settings.timeout,
            },
            stats,
        ))
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
        if self.spans.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
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

/// The export thread's loop: a batch goes when it is full, when its first span
/// has waited `delay`, or when asked. The queue is read on a tick rather than
/// awaited, so a call ending a span never wakes this thread: every 5 ms while spans
/// come, every 50 ms when they stopped coming.
async fn run<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
    settings: BatchSettings,
    stats: Arc<ExportStats>,
) {
    use tokio::sync::mpsc::error::TryRecvError;
    let busy = Duration::from_millis(5);
    let idle = Duration::from_millis(50);
    let mut tick = idle;
    let mut batch: Vec<SpanData> = Vec::with_capacity(settings.max_batch);
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let asked = tokio::select! {
            biased;
            asked = control.recv() => match asked {
                Some(asked) => Some(asked),
                None => break,
            },
            () = tokio::time::sleep(tick) => None,
        };
        let mut got = 0;
        let mut closed = false;
        loop {
            match spans.try_recv() {
                Ok(span) => {
                    got += 1;
                    if batch.is_empty() {
                        due = Some(tokio::time::Instant::now() + settings.delay);
                    }
                    batch.push(span);
                    if batch.len() >= settings.max_batch {
                        export(&exporter, &mut batch, &settings, &stats).await;
                        due = None;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        tick = if got > 0 { busy } else { idle };
        let overdue = due.is_some_and(|at| tokio::time::Instant::now() >= at);
        if asked.is_some() || closed || overdue {
            export(&exporter, &mut batch, &settings, &stats).await;
            due = None;
        }
        match asked {
            Some(Control::Flush(done)) => {
                let _ = done.send(());
            }
            Some(Control::Shutdown(done)) => {
                let _ = exporter.shutdown();
                let _ = done.send(());
                return;
            }
            None if closed => break,
            None => {}
        }
    }
    export(&exporter, &mut batch, &settings, &stats).await;
    let _ = exporter.shutdown();
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    settings: &BatchSettings,
    stats: &ExportStats,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(settings.max_batch));
    let n = spans.len() as u64;
    match tokio::time::timeout(settings.timeout, exporter.export(spans)).await {
        Ok(Ok(())) => {
            stats.exported.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Err(err)) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(spans = n, error = %err, "tracing: the collector refused a batch");
        }
        Err(_) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(spans = n, timeout = ?settings.timeout, "tracing: exporting a batch timed out");
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
        got: Arc<Mutex<Vec<String>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Default for Keeper {
        fn default() -> Self {
            Keeper {
                got: Arc::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(0)),
            }
        }
    }

    impl SpanExporter for Keeper {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let _permit = self.gate.acquire().await;
            let mut got = self.got.lock().unwrap();
            got.extend(batch.into_iter().map(|s| s.name.into_owned()));
            Ok(())
        }
    }

    fn provider(
        keeper: Keeper,
        settings: BatchSettings,
    ) -> (
        opentelemetry_sdk::trace::SdkTracerProvider,
        Arc<ExportStats>,
    ) {
        let (processor, stats) = QueueProcessor::start(settings, move || Ok(keeper)).unwrap();
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
}
