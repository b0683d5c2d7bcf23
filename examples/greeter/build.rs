fn main() {
    if let Err(err) = rmicro_build::compile(&["proto/greeter.proto"], &["proto"]) {
        panic!("{err}");
    }
}
