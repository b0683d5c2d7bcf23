//! The greeter example: one service with all four kinds of RPC, its handler, and a
//! short client tour that calls each of them.

/// Code generated from `proto/greeter.proto`.
pub mod proto {
    rmicro::include_proto!("greeter.v1");
}

use futures_util::StreamExt;
use proto::{HelloReply, HelloRequest};
use rmicro::{Error, Request, RequestStream, ResponseSender};

/// The `id` of errors this service returns.
pub const SERVICE: &str = "greeter";

/// The greeter's handlers.
#[derive(Debug, Default, Clone)]
pub struct Greeter;

fn hello(name: &str) -> Result<HelloReply, Error> {
    if name.trim().is_empty() {
        return Err(Error::bad_request(SERVICE, "name must not be empty"));
    }
    Ok(HelloReply {
        message: format!("Hello {name}"),
    })
}

impl proto::Greeter for Greeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<HelloReply, Error> {
        hello(&request.message().name)
    }

    async fn say_hello_stream(
        &self,
        request: Request<HelloRequest>,
        replies: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        let HelloRequest { name, count } = request.into_message();
        hello(&name)?;
        for i in 1..=count {
            // `send` waits while the caller is slow; if the caller cancels, the server
            // drops this future, so the loop stops at once.
            replies
                .send(HelloReply {
                    message: format!("Hello {name} #{i}"),
                })
                .await?;
        }
        Ok(())
    }

    async fn collect(
        &self,
        request: Request<RequestStream<HelloRequest>>,
    ) -> Result<HelloReply, Error> {
        let mut names = Vec::new();
        let mut stream = request.into_message();
        while let Some(req) = stream.message().await? {
            names.push(req.name);
        }
        hello(&names.join(", "))
    }

    async fn chat(
        &self,
        request: Request<RequestStream<HelloRequest>>,
        replies: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        let mut stream = request.into_message();
        while let Some(req) = stream.next().await {
            replies.send(hello(&req?.name)?).await?;
        }
        Ok(())
    }
}

/// The greeter as tests and tools start it in process: on a free loopback port,
/// logging only warnings, command-line flags ignored; add a registry, version or
/// wrappers, then build and start it.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let service = greeter::on_loopback().version("1.0.0").build()?;
/// let server = service.start().await?;
/// assert!(server.local_addr().ip().is_loopback());
/// # Ok(()) }
/// ```
pub fn on_loopback() -> rmicro::ServiceBuilder {
    rmicro::Service::builder(SERVICE)
        .address("127.0.0.1:0")
        .args([SERVICE, "--log-level", "warn"])
        .handle(proto::GreeterServer::new(Greeter))
}

/// Calls every endpoint of the greeter once and prints what comes back: at `address`
/// if given, else wherever the client's registry finds the service `greeter`.
pub async fn tour(client: rmicro::Client, address: Option<&str>, name: &str) -> Result<(), Error> {
    let client = match address {
        Some(address) => client.with_route(SERVICE, address),
        None => client,
    };
    let greeter = proto::GreeterClient::new(SERVICE, client.clone());

    let reply = greeter
        .say_hello(HelloRequest {
            name: name.into(),
            count: 0,
        })
        .await?;
    println!("SayHello       -> {}", reply.message);

    let mut stream = greeter
        .say_hello_stream(HelloRequest {
            name: name.into(),
            count: 3,
        })
        .await?;
    while let Some(reply) = stream.message().await? {
        println!("SayHelloStream -> {}", reply.message);
    }

    let names = ["a", "b", "c"].map(|n| HelloRequest {
        name: n.into(),
        count: 0,
    });
    let reply = greeter
        .collect(futures_util::stream::iter(names.clone()))
        .await?;
    println!("Collect        -> {}", reply.message);

    let mut chat = greeter.chat(futures_util::stream::iter(names)).await?;
    while let Some(reply) = chat.message().await? {
        println!("Chat           -> {}", reply.message);
    }

    match greeter.say_hello(HelloRequest::default()).await {
        Err(err) => println!(
            "SayHello('')   -> error {} {}: {}",
            err.code, err.status, err.detail
        ),
        Ok(reply) => println!("SayHello('')   -> unexpected reply {}", reply.message),
    }

    let json = client
        .call_json(
            SERVICE,
            "Greeter.SayHello",
            &format!(r#"{{"name": "{name} (JSON)"}}"#),
            rmicro::CallOptions::new(),
        )
        .await?;
    println!("call_json      -> {json}");
    Ok(())
}
