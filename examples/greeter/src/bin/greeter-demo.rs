//! The demo: starts the greeter on a free loopback port, calls every endpoint over
//! real HTTP/2, then shuts the server down gracefully. Needs nothing installed.

use greeter::Greeter;
use greeter::proto::GreeterServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = match rmicro::Service::builder("greeter")
        .version("1.0.0")
        .address("127.0.0.1:0")
        .build()
    {
        Ok(service) => service,
        Err(err) => err.exit(),
    };
    service.wrap_handler(rmicro::wrapper::logging::LoggingLayer::new());
    service.handle(GreeterServer::new(Greeter));
    let server = service.start().await?;
    let address = server.local_addr().to_string();
    println!("greeter listening on {address}; calling it:\n");
    let result = greeter::tour(service.client(), Some(&address), "rmicro").await;
    let drained = server.stop().await;
    println!("\nserver stopped gracefully: {drained}");
    result?;
    Ok(())
}
