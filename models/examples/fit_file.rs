//! Train a model from a CSV or Parquet file in-process and print the fit time: a profiling aid
//! for the trainers (`perf record` around it), not a test.
//!
//! ```sh
//! cargo run --release --example fit_file -- <file> <target> "<SQL over table t>" [key=value ...]
//! ```
//! e.g. `fit_file bank.csv y "SELECT * EXCLUDE (duration) FROM t" delimiter=; num_trees=300`.
//! `delimiter=` and `algorithm=` are read here; every other `key=value` is a `WITH` option.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::concat;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use prognos_models::{Algorithm, TrainContext, TrainRequest, train};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, target, sql, rest @ ..] = args.as_slice() else {
        return Err("usage: fit_file <file> <target> <sql over t> [key=value ...]".into());
    };
    let mut options = BTreeMap::new();
    let mut delimiter = b',';
    let mut algorithm = Algorithm::Gbdt;
    for kv in rest {
        let (k, v) = kv.split_once('=').ok_or("options are key=value")?;
        match k {
            "delimiter" => delimiter = *v.as_bytes().first().ok_or("empty delimiter")?,
            "algorithm" => algorithm = Algorithm::parse(v)?,
            _ => {
                options.insert(k.to_string(), v.to_string());
            }
        }
    }
    let ctx = SessionContext::new();
    if file.ends_with(".parquet") {
        ctx.register_parquet("t", file, ParquetReadOptions::default())
            .await?;
    } else {
        ctx.register_csv(
            "t",
            file,
            CsvReadOptions::new()
                .delimiter(delimiter)
                .schema_infer_max_records(1_000_000),
        )
        .await?;
    }
    let df = ctx.sql(sql).await?;
    let schema = df.schema().as_arrow().clone();
    let batches = df.collect().await?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let cols = (0..names.len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            concat(&parts)
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    let cancel = AtomicBool::new(false);
    let mut quiet = |_: String| {};
    let mut tctx = TrainContext {
        progress: &mut quiet,
        cancel: &cancel,
    };
    let req = TrainRequest {
        target: Some(target.clone()),
        algorithm,
        options,
    };
    let start = Instant::now();
    let model = train(&names, &cols, &req, &mut tctx)?;
    println!(
        "rows {} fit {:.3}s metrics {:?}",
        cols[0].len(),
        start.elapsed().as_secs_f64(),
        model.metrics.values
    );
    Ok(())
}
