//! What one connection is doing: calls open on it and calls started, counted by a
//! thin layer over its service, so an idle connection can be found and closed.
//! A call counts as open until its response body ends or is dropped (a stream
//! until its last message), or until the client resets it.

use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// The counters of one connection: made per connection, shared by its
/// [`Counted`] service and whoever watches for the connection going idle.
#[derive(Debug, Default)]
pub struct Activity {
    open: AtomicUsize,
    started: AtomicUsize,
}

impl Activity {
    /// Calls open on the connection now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until the connection has had no call open and none started for
    /// `limit` (to within a quarter of it).
    pub async fn idle_for(&self, limit: Duration) {
        const TICKS: u32 = 4;
        let tick = limit / TICKS;
        let mut quiet = 0;
        let mut seen = self.started.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(tick).await;
            let started = self.started.load(Ordering::Relaxed);
            if started == seen && self.open.load(Ordering::Acquire) == 0 {
                quiet += 1;
                if quiet >= TICKS {
                    return;
                }
            } else {
                quiet = 0;
                seen = started;
            }
        }
    }
}

/// How long a connection told to go away because it sat idle may take to close
/// before it is cut (a call that slipped in before the GOAWAY keeps it open to
/// that call's end).
const IDLE_LINGER: Duration = Duration::from_secs(5);

/// Drives one hyper connection to its end: served until the client hangs up;
/// told to go away (HTTP/2 GOAWAY, HTTP/1.1 closed between requests) when `stop`
/// resolves — then awaited to its end, the caller bounding that wait — or when it
/// has had no call open or started for `idle_timeout`, lingering a few seconds for
/// a call that slipped in before the GOAWAY. `activity` must be the one its
/// service counts with ([`Counted`]). An error ending the connection is logged at
/// debug level with `peer`.
pub async fn drive_connection<C, E>(
    conn: C,
    activity: &Activity,
    idle_timeout: Option<Duration>,
    stop: impl Future<Output = ()>,
    peer: std::net::SocketAddr,
) where
    C: hyper_util::server::graceful::GracefulConnection<Error = E>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let idle = async {
        match idle_timeout {
            Some(limit) => activity.idle_for(limit).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        ended = conn.as_mut() => Some(ended),
        () = stop => {
            conn.as_mut().graceful_shutdown();
            Some(conn.as_mut().await)
        }
        () = idle => {
            tracing::debug!(%peer, idle = ?idle_timeout, "closing an idle connection");
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(IDLE_LINGER, conn.as_mut()).await {
                Ok(ended) => Some(ended),
                Err(_) if activity.open() > 0 => Some(conn.as_mut().await),
                Err(_) => None,
            }
        }
    };
    if let Some(Err(err)) = ended {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Keeps a call counted as open while it lives.
#[derive(Debug)]
pub(crate) struct Open(Arc<Activity>);

impl Open {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.open.fetch_add(1, Ordering::AcqRel);
        Open(activity.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's service, counting its calls in `activity`.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    pub(crate) inner: S,
    pub(crate) activity: Arc<Activity>,
}

impl<S> Counted<S> {
    /// `inner`, its calls counted in `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Counted { inner, activity }
    }
}

impl<S, B> hyper::service::Service<http::Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
{
    type Response = http::Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        CountedFuture {
            open: Some(Open::new(&self.activity)),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a counted call: hands its count on to the body.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let open = this.open.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, _open: open })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call counted as open until it is dropped.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        _open: Option<Open>,
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_when_nothing_is_open_or_started() {
        let activity = Arc::new(Activity::default());
        let open = Open::new(&activity);
        let limit = Duration::from_secs(4);
        // A call open all along: never idle.
        let waited = tokio::time::timeout(limit * 3, activity.idle_for(limit)).await;
        assert!(waited.is_err(), "a connection with a call open is not idle");
        drop(open);
        let start = tokio::time::Instant::now();
        activity.idle_for(limit).await;
        let took = start.elapsed();
        assert!(took >= limit && took <= limit + limit / 4, "{took:?}");

        // Calls started now and then keep it from being idle, even when each ends.
        let busy = {
            let activity = activity.clone();
            tokio::spawn(async move {
                for _ in 0..12 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    drop(Open::new(&activity));
                }
            })
        };
        let start = tokio::time::Instant::now();
        activity.idle_for(limit).await;
        assert!(
            start.elapsed() >= Duration::from_secs(12),
            "{:?}",
            start.elapsed()
        );
        busy.await.unwrap();
    }
}
