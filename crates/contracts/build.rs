//! Generates the Rust types and tonic stubs for `proto/courtside/v1` at build
//! time. `protox` parses the `.proto` files in pure Rust, so no machine needs
//! a system `protoc`; nothing generated is committed.

use std::{env, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["courtside/v1/analytics.proto", "courtside/v1/events.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }

    let descriptors = protox::compile(files, [&proto_root])?;

    // The encoded descriptor set feeds the gRPC reflection service.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("courtside_v1_descriptor.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
