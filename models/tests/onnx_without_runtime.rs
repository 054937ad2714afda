//! A process whose ONNX Runtime library is not a library: loading an ONNX model is an error
//! that names what to install — never a panic — and stays one on every later try.
//! (A test binary of its own: the runtime is loaded once per process.)

use prognos_models::ModelError;
use prognos_models::onnx::{OnnxGraph, runtime};

#[test]
fn a_broken_runtime_library_is_a_clear_error() {
    let fake = std::env::temp_dir().join(format!("not-onnxruntime-{}.so", std::process::id()));
    std::fs::write(&fake, b"this is not a shared library").expect("write fake library");
    runtime::set_library_path(&fake);
    for _ in 0..2 {
        match OnnxGraph::load(b"irrelevant".to_vec()) {
            Err(ModelError::RuntimeUnavailable(message)) => {
                assert!(message.contains("could not be loaded"), "{message}");
                assert!(
                    message.contains("pip install onnxruntime==1.31.1"),
                    "{message}"
                );
            }
            other => panic!("expected RuntimeUnavailable, got {other:?}"),
        }
    }
    assert!(!runtime::available());
    let _ = std::fs::remove_file(&fake);
}
