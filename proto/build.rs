//! Compiles `reseller/v1/*.proto` with protox (no system `protoc`) and exports the file
//! descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "reseller/v1/common.proto",
        "reseller/v1/customer.proto",
        "reseller/v1/device.proto",
        "reseller/v1/msp.proto",
        "reseller/v1/reporting.proto",
        "reseller/v1/events.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("reseller_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
