//! Generates the messages, the handler trait, the server and the typed client of
//! `proto/user.proto` (pure Rust: no `protoc` needed).

fn main() {
    if let Err(err) = rmicro_build::compile(&["proto/user.proto"], &["proto"]) {
        panic!("{err}");
    }
}
