//! ONNX models through ONNX Runtime (`prognos_models::onnx`): scikit-learn pipelines converted
//! by skl2onnx, LightGBM and XGBoost models converted by onnxmltools, an LSTM and an attention
//! block and an encoder built node by node — generated here by `tests/python/onnx_fixtures.py`, never
//! downloaded — score the same as Python onnxruntime on the same rows (within 1e-5), whatever
//! their inputs (one matrix, one tensor per column, a sequence) and outputs (label +
//! probability tensor, ZipMap probabilities, regression values). The same fixtures are scored
//! through the server, in SQL, by `tests/python/test_onnx_models.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

use prognos_models::onnx::{Feed, OnnxGraph, OutputValue, PortKind};
use serde_json::Value;

/// The test environment's Python (scripts/test.sh fills `$PROGNOS_VENV`, default `.venv`).
fn python() -> PathBuf {
    let venv = std::env::var_os("PROGNOS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    venv.join("bin/python")
}

/// Generate the fixtures into a temporary directory; `None` (skip) when Python or its
/// packages are missing and the run does not require them.
fn fixtures() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/onnx_fixtures.py");
    let out = Command::new(python()).arg(&script).arg(dir.path()).output();
    match out {
        Ok(o) if o.status.success() => Some(dir),
        other if prognos_e2e::clients_required() => {
            panic!("generating ONNX fixtures failed: {other:?}")
        }
        other => {
            eprintln!("no ONNX fixtures ({other:?}); skipping");
            None
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5
}

fn check(name: &str, got: &OutputValue, want: &Value) {
    let shape = |v: &Value| -> Vec<i64> {
        v["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_i64().expect("dim"))
            .collect()
    };
    let numbers = |v: &Value| -> Vec<f64> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|d| d.as_f64().expect("number"))
            .collect()
    };
    match got {
        OutputValue::F32 { shape: s, data } => {
            assert_eq!(want["dtype"], "float32", "{name}");
            assert_eq!(s, &shape(want), "{name}");
            let w = numbers(want);
            assert_eq!(data.len(), w.len(), "{name}");
            for (i, (g, w)) in data.iter().zip(&w).enumerate() {
                assert!(close(f64::from(*g), *w), "{name}[{i}]: {g} vs {w}");
            }
        }
        OutputValue::F64 { shape: s, data } => {
            assert_eq!(want["dtype"], "float64", "{name}");
            assert_eq!(s, &shape(want), "{name}");
            for (i, (g, w)) in data.iter().zip(&numbers(want)).enumerate() {
                assert!(close(*g, *w), "{name}[{i}]: {g} vs {w}");
            }
        }
        OutputValue::I64 { shape: s, data } => {
            assert_eq!(want["dtype"], "int64", "{name}");
            assert_eq!(s, &shape(want), "{name}");
            let w: Vec<i64> = numbers(want).iter().map(|v| *v as i64).collect();
            assert_eq!(data, &w, "{name}");
        }
        OutputValue::Strings { shape: s, data } => {
            assert_eq!(want["dtype"], "string", "{name}");
            assert_eq!(s, &shape(want), "{name}");
            let w: Vec<String> = want["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|d| d.as_str().expect("text").to_string())
                .collect();
            assert_eq!(data, &w, "{name}");
        }
        OutputValue::LabelMaps(rows) => {
            let w = want["maps"].as_array().expect("maps");
            assert_eq!(rows.len(), w.len(), "{name}");
            for (r, (got_row, want_row)) in rows.iter().zip(w).enumerate() {
                let want_row = want_row.as_array().expect("row");
                assert_eq!(got_row.len(), want_row.len(), "{name} row {r}");
                for ((label, p), pair) in got_row.iter().zip(want_row) {
                    assert_eq!(label, pair[0].as_str().expect("label"), "{name} row {r}");
                    let wp = pair[1].as_f64().expect("p");
                    assert!(
                        close(f64::from(*p), wp),
                        "{name} row {r} {label}: {p} vs {wp}"
                    );
                }
            }
        }
    }
}

/// The graph's feeds as the fixture lists them.
fn feeds(spec: &Value) -> Vec<(String, Feed)> {
    spec["feeds"]
        .as_array()
        .expect("feeds")
        .iter()
        .map(|f| {
            let name = f["name"].as_str().expect("name").to_string();
            let shape: Vec<i64> = f["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_i64().expect("dim"))
                .collect();
            let data = f["data"].as_array().expect("data");
            let feed = match f["dtype"].as_str().expect("dtype") {
                "float32" => Feed::F32(
                    shape,
                    data.iter().map(|v| v.as_f64().expect("x") as f32).collect(),
                ),
                "string" => Feed::Strings(
                    shape,
                    data.iter()
                        .map(|v| v.as_str().expect("text").to_string())
                        .collect(),
                ),
                other => panic!("fixture feed type {other}"),
            };
            (name, feed)
        })
        .collect()
}

#[test]
fn every_fixture_scores_as_onnxruntime_does() {
    let Some(dir) = fixtures() else {
        return;
    };
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".onnx")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    // scikit-learn (4 matrix pipelines, 1 one-hot pipeline), LightGBM, XGBoost, LSTM, attention,
    // an encoder, a graph with a fixed batch size.
    assert_eq!(names.len(), 11, "fixtures: {names:?}");
    for name in names {
        let bytes = std::fs::read(dir.path().join(format!("{name}.onnx"))).expect("onnx");
        let spec: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{name}.json"))).expect("json"),
        )
        .expect("fixture json");
        let graph = OnnxGraph::load(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Inputs are read from the graph: their names and element types are the fixture's,
        // with an open batch dimension.
        let feeds = feeds(&spec);
        assert_eq!(graph.inputs().len(), feeds.len(), "{name}");
        if let Some(batch) = spec["fixed_batch"].as_i64() {
            // Scored run by run through the server (test_onnx_models.py); here, the fixed
            // dimension is what the graph declares.
            let PortKind::Tensor { shape, .. } = &graph.inputs()[0].kind else {
                panic!("{name}: not a tensor input");
            };
            assert_eq!(shape[0], batch, "{name}");
            continue;
        }
        for (port, (feed_name, feed)) in graph.inputs().iter().zip(&feeds) {
            assert_eq!(&port.name, feed_name, "{name}");
            let PortKind::Tensor { element, shape } = &port.kind else {
                panic!("{name}: input {port} is not a tensor");
            };
            let want = match feed {
                Feed::Strings(..) => "string",
                _ => "float32",
            };
            assert_eq!(element, want, "{name}");
            assert_eq!(shape[0], -1, "{name}: {port}");
        }
        let output_names: Vec<&str> = graph.outputs().iter().map(|p| p.name.as_str()).collect();
        let want_names: Vec<&str> = spec["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|v| v.as_str().expect("name"))
            .collect();
        assert_eq!(output_names, want_names, "{name}");

        let got = graph
            .run(feeds.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = spec["expected"].as_array().expect("expected");
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            check(&format!("{name} output {i}"), g, w);
        }
        // Several threads score the same graph at once (sessions come from a pool).
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let again = graph.run(feeds.clone()).expect("parallel run");
                    assert_eq!(again, got, "{name}: a parallel run differs");
                });
            }
        });
    }
}

#[test]
fn bad_graphs_and_inputs_are_errors() {
    if prognos_models::onnx::runtime::library_path().is_none() && !prognos_e2e::clients_required() {
        eprintln!("ORT_DYLIB_PATH not set; skipping");
        return;
    }
    // Not ONNX at all, and a real graph cut short.
    let e = OnnxGraph::load(b"not an onnx file".to_vec()).expect_err("garbage");
    assert!(e.to_string().contains("ONNX Runtime"), "{e}");
    let Some(dir) = fixtures() else {
        return;
    };
    let bytes = std::fs::read(dir.path().join("logistic_pipeline.onnx")).expect("onnx");
    let e = OnnxGraph::load(bytes[..bytes.len() / 2].to_vec()).expect_err("truncated");
    assert!(e.to_string().contains("ONNX Runtime"), "{e}");
    // The wrong number of columns, and an input name the graph does not have.
    let graph = OnnxGraph::load(bytes).expect("load");
    let name = graph.inputs()[0].name.clone();
    let e = graph
        .run_matrix(&name, 2, 3, &[0.0; 6])
        .expect_err("3 columns");
    assert!(e.to_string().contains("ONNX Runtime"), "{e}");
    let e = graph
        .run_matrix("nope", 2, 4, &[0.0; 8])
        .expect_err("unknown input");
    assert!(e.to_string().contains("ONNX Runtime"), "{e}");
    let e = graph
        .run_matrix(&name, 2, 4, &[0.0; 7])
        .expect_err("7 values");
    assert!(e.to_string().contains("2 x 4"), "{e}");
    // The graph still scores after those failures.
    assert!(graph.run_matrix(&name, 1, 4, &[0.0; 4]).is_ok());
}
