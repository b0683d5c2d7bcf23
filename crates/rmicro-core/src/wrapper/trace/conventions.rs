//! The attribute names rmicro's spans carry: OpenTelemetry semantic conventions
//! v1.27.0 for RPC (gRPC) and messaging spans, plus go-micro's names.

/// `grpc` on every RPC span.
pub const RPC_SYSTEM: &str = "rpc.system";
/// The full gRPC service name, `greeter.v1.Greeter`.
pub const RPC_SERVICE: &str = "rpc.service";
/// The method, `SayHello`.
pub const RPC_METHOD: &str = "rpc.method";
/// The gRPC status code as a number (0 for OK).
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// The callee's host, on client spans (the node the last attempt went to).
pub const SERVER_ADDRESS: &str = "server.address";
/// The callee's port, on client spans.
pub const SERVER_PORT: &str = "server.port";
/// The caller's address, on server spans.
pub const CLIENT_ADDRESS: &str = "client.address";
/// The caller's port, on server spans.
pub const CLIENT_PORT: &str = "client.port";
/// The gRPC status name of a failed call (`UNAVAILABLE`).
pub const ERROR_TYPE: &str = "error.type";

/// The messaging system (`rmicro` plus the broker's name, e.g. `nats`).
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// The topic.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// `publish` or `process`.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// `publish` or `process`, as the operation is named.
pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
/// The message id header (`Micro-Id`), when there is one.
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// The message body's size in bytes.
pub const MESSAGING_MESSAGE_BODY_SIZE: &str = "messaging.message.body.size";
/// The queue group a subscriber is in.
pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
/// Which delivery of the message this is (1 for the first).
pub const MICRO_DELIVERY_ATTEMPT: &str = "micro.delivery.attempt";

/// The service's registered name (`greeter`).
pub const MICRO_SERVICE: &str = "micro.service";
/// go-micro's operation name, `<service>.<endpoint>` (`greeter.Greeter.SayHello`).
pub const MICRO_ENDPOINT: &str = "micro.endpoint";
/// The error's `id` (the service that failed), for failed calls.
pub const MICRO_ERROR_ID: &str = "micro.error.id";
/// The mTLS identity of the caller, on server spans.
pub const MICRO_PEER_IDENTITY: &str = "micro.peer.identity";
/// Messages sent on the call, when it ended (a stream counts each).
pub const MICRO_MESSAGES_SENT: &str = "micro.messages.sent";
/// Messages received on the call, when it ended.
pub const MICRO_MESSAGES_RECEIVED: &str = "micro.messages.received";
/// An attempt's number (1 for the first), on `attempt` events.
pub const RPC_ATTEMPT: &str = "rpc.attempt";
/// The registry node an attempt went to.
pub const MICRO_NODE: &str = "micro.node";
