//! Generates the etcd v3 client stubs from `proto/etcd.proto` through protox, so no
//! system `protoc` is needed (unlike the `etcd-client` crate).

fn main() {
    let proto = "proto/etcd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = match protox::compile([proto], ["proto"]) {
        Ok(fds) => fds,
        Err(err) => panic!("cannot compile {proto}: {err}"),
    };
    if let Err(err) = tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)
    {
        panic!("tonic codegen for {proto} failed: {err}");
    }
}
