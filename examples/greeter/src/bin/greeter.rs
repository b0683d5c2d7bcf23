//! The greeter service: `greeter --server-address 127.0.0.1:50051`.

use greeter::Greeter;
use greeter::proto::GreeterServer;
use rmicro::wrapper::logging::LoggingLayer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = match rmicro::Service::builder("greeter")
        .version("1.0.0")
        .wrap_handler(LoggingLayer::new())
        .handle(GreeterServer::new(Greeter))
        .build()
    {
        Ok(service) => service,
        Err(err) => err.exit(),
    };
    service.run().await?;
    Ok(())
}
