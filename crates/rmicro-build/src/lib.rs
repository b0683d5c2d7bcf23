//! Generates rmicro code from `.proto` files, in pure Rust (no system `protoc`).
//!
//! For every `.proto` package it writes one Rust file to `OUT_DIR` holding:
//! - the prost message types;
//! - per service, a handler trait with one async method per RPC (all four kinds),
//!   a `*Server` type to pass to the service builder's `.handle(..)`, and a typed `*Client`;
//! - each endpoint's name and request/response description (go-micro's
//!   `Endpoint{name, request, response, metadata}`, for the registry);
//! - `FILE_DESCRIPTOR_SET`, the encoded descriptors (reflection, the JSON codec).
//!
//! In `build.rs`:
//!
//! ```no_run
//! rmicro_build::compile(&["proto/greeter.proto"], &["proto"]).expect("protos compile");
//! ```
//!
//! and in the crate, `rmicro::include_proto!("greeter.v1");`.
//!
//! `import "google/api/annotations.proto";` always resolves (rmicro-build carries
//! `google/api/http.proto` and `annotations.proto`), so methods can declare their
//! HTTP routes with `option (google.api.http) = { get: "/v1/hello/{name}" };` for
//! `rmicro api` and other gateways; `import "go/api/api.proto";` gives go-micro's
//! `go.api.Request`/`Response` for services behind `rmicro api --handler api`. A
//! copy under the caller's own includes wins.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod endpoints;
mod service;

use std::path::{Path, PathBuf};

/// Why code generation failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `.proto` file could not be parsed or an import was not found.
    #[error("cannot compile .proto files: {0}")]
    Proto(#[from] protox::Error),
    /// Writing generated code failed.
    #[error("cannot write generated code: {0}")]
    Io(#[from] std::io::Error),
    /// `OUT_DIR` is not set and no output directory was given.
    #[error("OUT_DIR is not set: call rmicro-build from build.rs, or set Builder::out_dir")]
    NoOutDir,
}

/// The `.proto` files every compile can import.
const BUNDLED: [(&str, &str); 3] = [
    (
        "google/api/http.proto",
        include_str!("../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../proto/google/api/annotations.proto"),
    ),
    (
        "go/api/api.proto",
        include_str!("../proto/go/api/api.proto"),
    ),
];

/// Writes `text` to `path` unless it already holds it (no rebuild for nothing).
fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, text)
}

/// A user adjustment to prost's configuration.
type ProstTweak = Box<dyn Fn(&mut prost_build::Config) + 'static>;

/// Options for code generation.
#[derive(Default)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    prost: Vec<ProstTweak>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("out_dir", &self.out_dir)
            .field("prost", &self.prost.len())
            .finish()
    }
}

/// Compiles `files`, finding imports under `includes`, into `OUT_DIR`.
pub fn compile(
    files: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), BuildError> {
    Builder::new().compile(files, includes)
}

impl Builder {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes into `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Adjusts prost's message generation (attributes, type mappings, …).
    pub fn configure_prost(mut self, f: impl Fn(&mut prost_build::Config) + 'static) -> Self {
        self.prost.push(Box::new(f));
        self
    }

    /// Compiles `files`, finding imports under `includes`.
    pub fn compile(
        self,
        files: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), BuildError> {
        let out_dir = match self.out_dir {
            Some(dir) => dir,
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(BuildError::NoOutDir)?,
        };
        for file in files {
            println!("cargo:rerun-if-changed={}", file.as_ref().display());
        }
        for include in includes {
            println!("cargo:rerun-if-changed={}", include.as_ref().display());
        }
        // The google.api protos rmicro carries, after the caller's own includes.
        let bundled = out_dir.join("rmicro-include");
        std::fs::create_dir_all(bundled.join("google/api"))?;
        std::fs::create_dir_all(bundled.join("go/api"))?;
        for (name, text) in BUNDLED {
            write_if_changed(&bundled.join(name), text)?;
        }
        let mut all: Vec<PathBuf> = includes.iter().map(|i| i.as_ref().to_path_buf()).collect();
        all.push(bundled);
        let mut compiler = protox::Compiler::new(&all)?;
        compiler
            .include_imports(true)
            .include_source_info(true)
            .open_files(files)?;
        // prost-build reads the doc comments from the source info.
        let fds = compiler.file_descriptor_set();
        // Reflection and the JSON codec need descriptors with their options'
        // extensions (`google.api.http`, which prost's own types drop); source
        // info only adds bulk.
        compiler.include_source_info(false);
        std::fs::create_dir_all(&out_dir)?;
        let fds_file = std::path::absolute(out_dir.join("rmicro_file_descriptor_set.bin"))?;
        std::fs::write(&fds_file, compiler.encode_file_descriptor_set())?;

        let mut config = prost_build::Config::new();
        config.out_dir(&out_dir);
        config.service_generator(Box::new(service::Generator::new(&fds, &fds_file)));
        for f in &self.prost {
            f(&mut config);
        }
        config.compile_fds(fds)?;
        Ok(())
    }
}
