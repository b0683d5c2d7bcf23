//! Generates the hand-written-tonic side of the benchmarks from the greeter's and the
//! user service's protos,
//! with tonic's own code generator (through protox, so no system protoc is needed).

fn main() {
    let greeter = "../examples/greeter/proto/greeter.proto";
    let user = "../services/user/proto/user.proto";
    println!("cargo:rerun-if-changed={greeter}");
    println!("cargo:rerun-if-changed={user}");
    let proto = [greeter, user];
    let fds = match protox::compile(
        proto,
        [
            "../examples/greeter/proto",
            "../services/user/proto",
            "../crates/rmicro-build/proto",
        ],
    ) {
        Ok(fds) => fds,
        Err(err) => panic!("cannot compile {proto:?}: {err}"),
    };
    if let Err(err) = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
    {
        panic!("tonic codegen failed: {err}");
    }
}
