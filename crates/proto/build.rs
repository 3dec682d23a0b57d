//! Generates tonic/prost code for every `.proto` under `<workspace>/proto/erp`, using the protoc
//! binary shipped in the `protoc-bin-vendored` crate so no system `protoc` is needed.

use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let mut protos = Vec::new();
    collect_protos(&proto_root.join("erp"), &mut protos)?;
    protos.sort();
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.protoc_arg(format!(
        "--proto_path={}",
        protoc_bin_vendored::include_path()?.display()
    ));

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs a service does not implement yet answer UNIMPLEMENTED instead of not compiling.
        .generate_default_stubs(true)
        .codec_path("crate::codec::SizedProstCodec")
        .compile_with_config(config, &protos, &[proto_root])?;
    Ok(())
}
