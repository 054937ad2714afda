//! The `cargo fuzz` corpora (`tests/fuzz/corpus/`) replayed as ordinary tests, so every input
//! the fuzzers kept — and every crash they found, once added there — is checked in CI on stable
//! Rust: the SQL front door and the model-artifact loader return a value or an error for each,
//! never panic. Each artifact is also replayed cut short and with bytes flipped.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

#[test]
fn the_sql_front_door_corpus_parses_or_fails_cleanly() {
    let inputs = corpus("sql_front_door");
    assert!(inputs.len() >= 40, "corpus too small: {}", inputs.len());
    let mut parsed = 0;
    for (path, bytes) in &inputs {
        let Ok(sql) = std::str::from_utf8(bytes) else {
            continue;
        };
        let outcome = std::panic::catch_unwind(|| prognos_engine::parser::parse(sql).is_ok());
        match outcome {
            Ok(true) => parsed += 1,
            Ok(false) => {}
            Err(_) => panic!("{} panics the parser", path.display()),
        }
    }
    // The seeds are the examples' statements (valid SQL); what libFuzzer added on top is
    // mostly not.
    assert!(parsed >= 40, "{parsed} of {} parsed", inputs.len());
}

#[test]
fn the_artifact_corpus_loads_or_is_reported_corrupt() {
    let inputs = corpus("artifact_loader");
    assert!(inputs.len() >= 5, "corpus too small: {}", inputs.len());
    for (path, bytes) in &inputs {
        let artifact = prognos_models::ModelArtifact::from_bytes(bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!artifact.input_descriptions().is_empty() || path.ends_with("a_fc.json"));
        // Damaged copies: every cut, and single-bit flips along the document.
        for cut in (0..bytes.len()).step_by((bytes.len() / 64).max(1)) {
            let r = std::panic::catch_unwind(|| {
                prognos_models::ModelArtifact::from_bytes(&bytes[..cut]).is_ok()
            });
            assert_eq!(r.ok(), Some(false), "{} cut at {cut}", path.display());
        }
        for at in (0..bytes.len()).step_by((bytes.len() / 256).max(1)) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x20;
            let r = std::panic::catch_unwind(|| {
                if let Ok(a) = prognos_models::ModelArtifact::from_bytes(&flipped) {
                    let _ = a.input_descriptions();
                    let _ = a.output_type();
                }
            });
            assert!(
                r.is_ok(),
                "{} with byte {at} flipped panics",
                path.display()
            );
        }
    }
}
