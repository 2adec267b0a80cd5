//! Compiles proto/felix.proto with protox (pure Rust), so building needs no system `protoc`.
//! The client is always built; the server only with the `server` feature, which only the test
//! support crate's fake Felix enables.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/felix.proto");
    let descriptors = protox::compile(["proto/felix.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
