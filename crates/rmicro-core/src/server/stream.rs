//! Streams on the server side: messages a client streams in, messages a handler
//! streams out.
//!
//! A streaming handler's future is driven by the response body itself, not by a
//! spawned task: when the caller goes away hyper drops the body, which drops the
//! handler, so a disconnecting client leaves nothing running.

use super::dispatch::{InFlightGuard, map_transport_status};
use crate::errors::Error;
use crate::wrapper::MessageCounts;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tonic::Status;

/// Messages a client streams to a handler, in order.
pub struct RequestStream<T> {
    inner: tonic::Streaming<T>,
    service: std::sync::Arc<str>,
    messages: Arc<MessageCounts>,
}

impl<T> std::fmt::Debug for RequestStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStream").finish_non_exhaustive()
    }
}

impl<T> RequestStream<T> {
    pub(crate) fn new(
        inner: tonic::Streaming<T>,
        service: std::sync::Arc<str>,
        messages: Arc<MessageCounts>,
    ) -> Self {
        RequestStream {
            inner,
            service,
            messages,
        }
    }
}

impl<T: prost::Message> RequestStream<T> {
    /// The next message; `Ok(None)` once the client has closed its side.
    pub async fn message(&mut self) -> Result<Option<T>, Error> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }
}

impl<T: prost::Message> Stream for RequestStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        Pin::new(&mut this.inner).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(message) => {
                    this.messages.record_received(message.encoded_len());
                    Ok(message)
                }
                Err(s) => Err(Error::from_status(&map_transport_status(s), &this.service)),
            })
        })
    }
}

/// Sends a handler's replies to the caller.
#[derive(Debug)]
pub struct ResponseSender<T> {
    tx: mpsc::Sender<T>,
    messages: Arc<MessageCounts>,
}

impl<T: prost::Message> ResponseSender<T> {
    /// Sends one reply, waiting while the caller is slower than the handler
    /// (back-pressure). Fails once the stream is closed.
    pub async fn send(&self, message: T) -> Result<(), Error> {
        let size = message.encoded_len();
        self.tx
            .send(message)
            .await
            .map_err(|_| Error::new("rmicro.server", 499, "the caller closed the stream"))?;
        self.messages.record_sent(size);
        Ok(())
    }
}

/// The response stream of a streaming handler: drives the handler and yields what it
/// sends, then its error if it failed, and stops at the deadline.
pub(crate) struct HandlerStream<T> {
    handler: Option<BoxFuture<'static, Result<(), Error>>>,
    rx: mpsc::Receiver<T>,
    error: Option<Status>,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
    _in_flight: InFlightGuard,
}

/// Replies buffered between a handler and the wire before `send` waits.
const SEND_BUFFER: usize = 16;

impl<T: Send + 'static> HandlerStream<T> {
    /// Starts `handler` with a sender; the returned stream yields what it sends.
    pub(crate) fn new<F, Fut>(
        handler: F,
        deadline: Option<Instant>,
        in_flight: InFlightGuard,
        messages: Arc<MessageCounts>,
    ) -> Self
    where
        F: FnOnce(ResponseSender<T>) -> Fut,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        HandlerStream {
            handler: Some(Box::pin(handler(ResponseSender { tx, messages }))),
            rx,
            error: None,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            done: false,
            _in_flight: in_flight,
        }
    }
}

impl<T> Stream for HandlerStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            // Dropping the handler cancels it.
            this.handler = None;
            this.done = true;
            return Poll::Ready(Some(Err(Error::timeout(
                "rmicro.server",
                "the call ran past its deadline",
            )
            .to_status())));
        }
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Poll::Ready(None) if this.handler.is_none() => {
                    this.done = true;
                    return Poll::Ready(this.error.take().map(Err));
                }
                _ => {}
            }
            let Some(handler) = &mut this.handler else {
                // The handler finished but a sender it handed on is still open.
                return Poll::Pending;
            };
            match handler.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    this.handler = None;
                    this.error = result.err().map(|e| e.to_status());
                    // Loop to drain what the handler sent before it returned.
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
