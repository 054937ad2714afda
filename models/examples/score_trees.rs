//! Time native GBDT scoring in-process: a profiling aid for the tree scorer (`perf record`
//! around it), not a test. Trains `USING gbdt` with the settings of
//! `benches/predict_bench.py` (300 trees, 31 leaves) on synthetic rows shaped like that
//! benchmark's, then scores fresh rows on one thread and prints rows/s.
//!
//! ```sh
//! cargo run -p prognos-models --example score_trees -- [train_rows] [score_rows]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float32Array, Int64Array};
use prognos_models::{Algorithm, TrainContext, TrainRequest, train};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FEATURES: usize = 20;

/// `n` rows of 20 standard-normal features and a binary label (as the Python benchmark
/// draws them: a linear term, a sine, an interaction and noise).
fn synthetic(n: usize, seed: u64) -> (Vec<String>, Vec<ArrayRef>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = |rng: &mut ChaCha8Rng| {
        // Box-Muller: enough for a benchmark's data.
        let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let w: Vec<f32> = (0..FEATURES).map(|_| normal(&mut rng)).collect();
    let x: Vec<Vec<f32>> = (0..FEATURES)
        .map(|_| (0..n).map(|_| normal(&mut rng)).collect())
        .collect();
    let y: Vec<i64> = (0..n)
        .map(|i| {
            let lin: f32 = (0..FEATURES).map(|f| x[f][i] * w[f]).sum::<f32>() * 0.5;
            let logit = lin + (x[0][i] * 2.0).sin() + x[1][i] * x[2][i] + normal(&mut rng);
            i64::from(logit > 0.0)
        })
        .collect();
    let mut names: Vec<String> = (0..FEATURES).map(|f| format!("f{f}")).collect();
    let mut cols: Vec<ArrayRef> = x
        .into_iter()
        .map(|c| Arc::new(Float32Array::from(c)) as ArrayRef)
        .collect();
    names.push("y".into());
    cols.push(Arc::new(Int64Array::from(y)));
    (names, cols)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let train_rows = args.first().copied().unwrap_or(100_000);
    let score_rows = args.get(1).copied().unwrap_or(200_000);
    let (names, cols) = synthetic(train_rows, 11);
    let options: BTreeMap<String, String> = [
        ("num_trees", "300"),
        ("learning_rate", "0.05"),
        ("num_leaves", "31"),
        ("validation_fraction", "0"),
        ("early_stopping_rounds", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cancel = AtomicBool::new(false);
    let mut quiet = |_: String| {};
    let mut tctx = TrainContext {
        progress: &mut quiet,
        cancel: &cancel,
    };
    let req = TrainRequest {
        target: Some("y".into()),
        algorithm: Algorithm::Gbdt,
        options,
    };
    let start = Instant::now();
    let model = train(&names, &cols, &req, &mut tctx)?;
    println!(
        "trained on {train_rows} rows in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    let (_, score_cols) = synthetic(score_rows, 12);
    let features = &score_cols[..FEATURES];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut best = f64::INFINITY;
    let mut checksum = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        // Batches of 8192 rows, as a query hands them over.
        for at in (0..score_rows).step_by(8192) {
            let len = 8192.min(score_rows - at);
            let batch: Vec<ArrayRef> = features.iter().map(|c| c.slice(at, len)).collect();
            let (scores, _) = pool.install(|| model.scores(&batch))?;
            checksum += scores.iter().map(|&s| f64::from(s)).sum::<f64>();
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "scored {score_rows} rows on 1 thread: {:.0} rows/s (checksum {checksum:.3})",
        score_rows as f64 / best
    );
    Ok(())
}
