//! The ONNX Runtime library, loaded once per process at the first use of an ONNX model.
//!
//! prognos links no ONNX Runtime at build time (`ort`'s `load-dynamic`): the library comes from
//! the PyPI `onnxruntime` wheel (CPU) or `onnxruntime-gpu` (CUDA), found through the path set
//! with [`set_library_path`] (the server's `models.onnx_library` setting) or the `ORT_DYLIB_PATH`
//! variable. Loading goes through `ort::init_from`, which reports a missing or wrong library
//! as an error; a server without the library serves everything but ONNX models, which fail
//! with [`ModelError::RuntimeUnavailable`] naming what to install.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::{ModelError, ModelResult};

/// The ONNX Runtime release whose C API (`api-31`) this build speaks.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// What to do when the library is missing, for error messages and logs.
pub const INSTALL_HINT: &str = "install the ONNX Runtime library from PyPI \
    (`pip install onnxruntime==1.31.1`, or `onnxruntime-gpu==1.31.1` for CUDA) and point \
    ORT_DYLIB_PATH (or the `models.onnx_library` setting) at its \
    `onnxruntime/capi/libonnxruntime.so.1.31.1`";

static CONFIGURED: OnceLock<PathBuf> = OnceLock::new();
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Use the library at `path` (the server's setting); takes precedence over `ORT_DYLIB_PATH`.
/// Only the first call counts, and only before the first ONNX model is loaded.
pub fn set_library_path(path: impl Into<PathBuf>) {
    let _ = CONFIGURED.set(path.into());
}

/// The library path in effect, if any.
pub fn library_path() -> Option<PathBuf> {
    CONFIGURED
        .get()
        .cloned()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
}

/// The process's ONNX Runtime environment, loading the library on first use.
pub(crate) fn environment() -> ModelResult<&'static Environment> {
    ENVIRONMENT
        .get_or_init(|| match library_path() {
            None => Err(format!(
                "the ONNX Runtime library is not configured: {INSTALL_HINT}"
            )),
            Some(path) => load(&path),
        })
        .as_ref()
        .map_err(|e| ModelError::RuntimeUnavailable(e.clone()))
}

/// Whether ONNX models can run here (the library loads).
pub fn available() -> bool {
    environment().is_ok()
}

fn load(path: &Path) -> Result<Environment, String> {
    if !path.is_file() {
        return Err(format!(
            "the ONNX Runtime library {} does not exist: {INSTALL_HINT}",
            path.display()
        ));
    }
    let builder = ort::init_from(path).map_err(|e| {
        format!(
            "the ONNX Runtime library {} could not be loaded ({e}): {INSTALL_HINT}",
            path.display()
        )
    })?;
    builder
        .with_name("prognos")
        .build()
        .map_err(|e| format!("ONNX Runtime could not start: {e}"))
}
