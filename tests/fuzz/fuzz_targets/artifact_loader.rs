//! The model-artifact loader: any bytes as a stored model version. It must load a model or
//! return `Corrupt`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(artifact) = prognos_models::ModelArtifact::from_bytes(data) {
        let _ = artifact.input_descriptions();
        let _ = artifact.output_type();
    }
});
