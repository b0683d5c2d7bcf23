//! The contract between generated code and the server: a service's description and a
//! way to dispatch one of its methods.

use super::dispatch::CallEnv;
use crate::registry::Endpoint;
use crate::transport::Body;
use futures_util::future::BoxFuture;

/// The four kinds of gRPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// One request, one reply.
    Unary,
    /// One request, a stream of replies.
    ServerStreaming,
    /// A stream of requests, one reply.
    ClientStreaming,
    /// Streams both ways.
    Streaming,
}

/// One method of a service, as generated from the `.proto`.
#[derive(Debug, Clone, Copy)]
pub struct MethodDescriptor {
    /// Method name in the `.proto` (`SayHello`).
    pub name: &'static str,
    /// go-micro endpoint name (`Greeter.SayHello`).
    pub endpoint: &'static str,
    /// HTTP/2 path (`/greeter.v1.Greeter/SayHello`).
    pub path: &'static str,
    /// Unary or which way it streams.
    pub kind: MethodKind,
    /// Full name of the request message (`greeter.v1.HelloRequest`).
    pub input_type: &'static str,
    /// Full name of the reply message.
    pub output_type: &'static str,
}

/// A service as generated from the `.proto`: names, methods and descriptors.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDescriptor {
    /// Full gRPC name (`greeter.v1.Greeter`).
    pub name: &'static str,
    /// Name without the package (`Greeter`), the prefix of endpoint names.
    pub short_name: &'static str,
    /// The methods, in `.proto` order.
    pub methods: &'static [MethodDescriptor],
    /// The encoded `FileDescriptorSet` of the `.proto` files (reflection, JSON codec).
    pub file_descriptor_set: &'static [u8],
    /// Endpoint descriptions for the registry, in go-micro's shape.
    pub endpoints: fn() -> Vec<Endpoint>,
}

/// A gRPC service the server can route to: implemented by generated `*Server` types.
pub trait ServiceHandler: Send + Sync + 'static {
    /// What the service is.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Handles one call to the method at index `method` of [`Self::descriptor`].
    fn call(
        &self,
        method: usize,
        env: CallEnv,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, http::Response<Body>>;
}
