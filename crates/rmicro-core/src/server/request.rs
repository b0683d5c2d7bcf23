//! What a handler receives: the message and the call's context.

use crate::context::Context;
use crate::metadata::Metadata;
use std::sync::Arc;
use tokio::time::Instant;

/// An incoming call: a message (or a stream of them) plus the call's [`Context`].
#[derive(Debug)]
pub struct Request<T> {
    context: Arc<Context>,
    message: T,
}

impl<T> Request<T> {
    /// A request with an empty context, for calling a handler directly in tests.
    pub fn new(message: T) -> Self {
        Request {
            context: Arc::new(Context::new("", "")),
            message,
        }
    }

    /// A request with the given context.
    pub fn with_context(context: Arc<Context>, message: T) -> Self {
        Request { context, message }
    }

    /// The message (for streaming calls: the stream of messages).
    pub fn message(&self) -> &T {
        &self.message
    }

    /// Mutable access to the message; streaming handlers read from it.
    pub fn message_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message, dropping the context.
    pub fn into_message(self) -> T {
        self.message
    }

    /// Splits into context and message.
    pub fn into_parts(self) -> (Arc<Context>, T) {
        (self.context, self.message)
    }

    /// The call's context: service, endpoint, metadata, deadline.
    pub fn context(&self) -> &Arc<Context> {
        &self.context
    }

    /// Metadata the caller sent.
    pub fn metadata(&self) -> &Metadata {
        &self.context.metadata
    }

    /// When the caller stops waiting, if it set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.context.deadline
    }
}
