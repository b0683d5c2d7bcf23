//! Generates the hand-written-tonic side of the benchmark from the greeter's proto,
//! with tonic's own code generator (through protox, so no system protoc is needed).

fn main() {
    let proto = "../examples/greeter/proto/greeter.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = match protox::compile(
        [proto],
        ["../examples/greeter/proto", "../crates/rmicro-build/proto"],
    ) {
        Ok(fds) => fds,
        Err(err) => panic!("cannot compile {proto}: {err}"),
    };
    if let Err(err) = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
    {
        panic!("tonic codegen failed: {err}");
    }
}
