//! Training a stored forecasting model from the training query's batches as they arrive.
//!
//! [`ForecastTrainer`] splits rows into series (one per combination of id values). When the
//! caller promises rows grouped by id ([`ForecastTrainer::input_grouped`], e.g. a query
//! sorted by [`ForecastTrainer::sort_columns`]) a series is complete as soon as the next id
//! starts: complete series are fitted in chunks, in parallel, while later rows are still
//! being read, and only their fitted forecasts stay — memory follows the chunk, not the
//! table. Otherwise every series is held until [`ForecastTrainer::finish`]. The caller may
//! read only the columns the model uses ([`ForecastTrainer::project_input`]).
//!
//! `gbdt_lag` and `nbeats` are one model across all series, so they keep every series (as
//! regular values, far smaller than the query's rows) until the end whatever the input order.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use rayon::prelude::*;

use super::Method;
use super::global::{GlobalPlan, PreparedSeries, fit_global, network_candidates, network_plan};
use super::regular::on_grid;
use super::regularize;
use super::stored::{
    FittedSeries, ForecastModel, ForecastRequest, StoredColumn, fit_each, fit_prepared_each, label,
    model_artifact,
};
use super::time::{TimeAxis, times_as_i64, unit_nanos};
use crate::error::{ModelError, ModelResult};
use crate::model::ModelArtifact;
use crate::train::TrainContext;

/// A series' id values as text (`None` = NULL).
type SeriesKey = Vec<Option<String>>;

/// Complete series are fitted once this many rows of them are waiting ...
const CHUNK_ROWS: usize = 1 << 20;
/// ... or this many series.
const CHUNK_SERIES: usize = 512;

/// Bytes a fitted series keeps for a horizon: its forecast and up to five backtest windows
/// of errors (8 bytes a step each), its id, notes and scores.
const fn fitted_bytes(horizon: usize) -> usize {
    512 + 48 * horizon
}

/// `auto` holds its series as regular values, for a network across them, up to this many
/// values; past it the series are fitted as they complete and the network is not tried.
const NETWORK_MAX_HELD: usize = 5_000_000;

/// Bytes a row of an open series takes: its time and value, and 16 per exogenous column.
const ROW_BYTES: usize = std::mem::size_of::<(i64, Option<f64>)>();

/// Rows of one series as read.
#[derive(Debug, Default)]
struct OpenSeries {
    /// (time ticks, value).
    rows: Vec<(i64, Option<f64>)>,
    /// Per exogenous column, its value on each row.
    exogenous: Vec<Vec<Option<f64>>>,
}

/// Where the columns the model reads sit in the query's batches.
#[derive(Debug)]
struct Layout {
    time: usize,
    value: usize,
    ids: Vec<usize>,
    /// `gbdt_lag`'s exogenous columns (name, index).
    exogenous: Vec<(String, usize)>,
}

/// Builds a forecasting model from batches of the training query; see the module docs.
#[derive(Debug)]
pub struct ForecastTrainer {
    req: ForecastRequest,
    layout: Layout,
    nanos: i64,
    time: StoredColumn,
    value: StoredColumn,
    ids: Vec<StoredColumn>,
    grouped: bool,
    /// Series that may still receive rows, other than the current one (ungrouped input).
    open: HashMap<SeriesKey, OpenSeries>,
    /// The series the previous row belonged to, and its rows (kept out of `open`, so that a
    /// row of the same series costs no lookup).
    current: Option<(SeriesKey, OpenSeries)>,
    /// Series already closed (grouped input), to catch an id that comes back.
    closed: HashSet<SeriesKey>,
    /// Complete series waiting to be fitted, and their rows.
    ready: Vec<(SeriesKey, OpenSeries)>,
    ready_rows: usize,
    open_rows: usize,
    fitted: Vec<FittedSeries>,
    /// A global method's series, fitted together at the end.
    prepared: Vec<PreparedSeries>,
    prepared_values: usize,
    /// A global method's season and settings, chosen when the input has ended.
    plan: Option<GlobalPlan>,
    /// `auto` holds its series (in `prepared`) until the end, when a network across them may
    /// join its candidates.
    network: bool,
    /// That network, planned when the input has ended (when the series are worth one).
    network_plan: Option<GlobalPlan>,
    rows: usize,
    timeless: usize,
    /// Progress lines not yet sent.
    pending: Vec<String>,
    /// [`ForecastTrainer::end_of_input`] has run.
    ended: bool,
    started: Instant,
}

fn position(schema: &Schema, name: &str) -> ModelResult<usize> {
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    names
        .iter()
        .position(|n| *n == name)
        .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name)))
        .ok_or_else(|| {
            let list: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            ModelError::UnknownColumn(format!(
                "column \"{name}\" is not in the training query (it has: {})",
                list.join(", ")
            ))
        })
}

fn stored(schema: &Schema, name: &str, i: usize) -> StoredColumn {
    StoredColumn {
        name: name.to_string(),
        data_type: schema.field(i).data_type().to_string(),
    }
}

impl ForecastTrainer {
    /// A trainer for `req` over batches of `schema`; checks the columns and their types.
    pub fn new(schema: &Schema, req: &ForecastRequest) -> ModelResult<ForecastTrainer> {
        let time = position(schema, &req.time)?;
        let value = position(schema, &req.value)?;
        let ids = req
            .ids
            .iter()
            .map(|i| position(schema, i))
            .collect::<ModelResult<Vec<_>>>()?;
        let time_type = schema.field(time).data_type();
        let nanos = unit_nanos(time_type).ok_or_else(|| {
            ModelError::WrongType(format!(
                "the time column \"{}\" must be a timestamp, a date or an integer, not \
                 {time_type}",
                req.time
            ))
        })?;
        let value_type = schema.field(value).data_type();
        if !value_type.is_numeric() && *value_type != DataType::Null {
            return Err(ModelError::WrongType(format!(
                "the value column \"{}\" must be numeric, not {value_type}",
                req.value
            )));
        }
        let mut pending = vec![];
        let extra: Vec<(String, usize)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != time && *i != value && !ids.contains(i))
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        let exogenous = if req.method == Some(Method::GbdtLag) {
            for (n, i) in &extra {
                let t = schema.field(*i).data_type();
                if !(t.is_numeric() || *t == DataType::Boolean || *t == DataType::Null) {
                    return Err(ModelError::WrongType(format!(
                        "exogenous column \"{n}\" must be numeric or boolean, not {t} (leave \
                         it out of the training query, or encode it as a number)"
                    )));
                }
            }
            extra
        } else {
            if !extra.is_empty() {
                let list: Vec<&str> = extra.iter().map(|(n, _)| n.as_str()).collect();
                pending.push(format!(
                    "column(s) {} not used: only USING gbdt_lag reads exogenous columns",
                    list.join(", ")
                ));
            }
            vec![]
        };
        Ok(ForecastTrainer {
            time: stored(schema, &req.time, time),
            value: stored(schema, &req.value, value),
            ids: req
                .ids
                .iter()
                .zip(&ids)
                .map(|(n, &i)| stored(schema, n, i))
                .collect(),
            req: req.clone(),
            layout: Layout {
                time,
                value,
                ids,
                exogenous,
            },
            nanos,
            grouped: false,
            open: HashMap::new(),
            current: None,
            closed: HashSet::new(),
            ready: vec![],
            ready_rows: 0,
            open_rows: 0,
            fitted: vec![],
            prepared: vec![],
            prepared_values: 0,
            plan: None,
            network: req.method.is_none(),
            network_plan: None,
            rows: 0,
            timeless: 0,
            pending,
            ended: false,
            started: Instant::now(),
        })
    }

    /// Read only the columns the model uses: their positions in the query's schema, in the
    /// order batches must hold them from now on (time, value, ids, exogenous columns).
    pub fn project_input(&mut self) -> Vec<usize> {
        let layout = &mut self.layout;
        let mut read = vec![layout.time, layout.value];
        read.extend(&layout.ids);
        read.extend(layout.exogenous.iter().map(|(_, i)| *i));
        let k = layout.ids.len();
        layout.time = 0;
        layout.value = 1;
        layout.ids = (2..2 + k).collect();
        for (j, e) in layout.exogenous.iter_mut().enumerate() {
            e.1 = 2 + k + j;
        }
        read
    }

    /// The columns to sort the input by so that series can be fitted as they complete: the
    /// id columns, then the time column (so that sorting does not reorder a series' rows),
    /// as positions in the input. `None` when grouping would not help (a single series, or
    /// a global method, which fits all series at once).
    pub fn sort_columns(&self) -> Option<Vec<usize>> {
        (!self.layout.ids.is_empty() && !self.global()).then(|| {
            self.layout
                .ids
                .iter()
                .chain([&self.layout.time])
                .copied()
                .collect()
        })
    }

    /// The method trains one model across all series (`gbdt_lag`, `nbeats`).
    fn global(&self) -> bool {
        self.req.method.is_some_and(Method::is_global)
    }

    /// Promise that rows arrive grouped by id: all rows of a series before the next one.
    pub fn input_grouped(&mut self) {
        self.grouped = true;
    }

    /// Bytes the trainer holds now (open and waiting series, fitted series, and for
    /// a global method its series plus, once the input has ended, what its fit will need), for a
    /// memory reservation.
    pub fn held_bytes(&self) -> usize {
        let exogenous = self.layout.exogenous.len();
        let row = ROW_BYTES + 16 * exogenous;
        let fitted = self.fitted.len() * fitted_bytes(self.req.horizon);
        let prepared = self.prepared_values * 8 * (1 + exogenous);
        let fit = self
            .plan
            .iter()
            .chain(&self.network_plan)
            .map(|p| p.fit_bytes(&self.prepared, self.req.horizon))
            .sum::<usize>();
        (self.open_rows + self.ready_rows) * row + fitted + prepared + fit
    }

    fn flush_notes(&mut self, ctx: &mut TrainContext) {
        for m in self.pending.drain(..) {
            (ctx.progress)(m);
        }
    }

    /// Take one batch of the training query; fits the series it completes when enough are
    /// waiting.
    pub fn push(&mut self, batch: &RecordBatch, ctx: &mut TrainContext) -> ModelResult<()> {
        self.flush_notes(ctx);
        let n = batch.num_rows();
        self.rows += n;
        let times = times_as_i64(batch.column(self.layout.time))?;
        let times = times.as_primitive::<Int64Type>();
        let values = cast(batch.column(self.layout.value), &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        let ids: Vec<ArrayRef> = self
            .layout
            .ids
            .iter()
            .map(|&i| cast(batch.column(i), &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        let ids: Vec<_> = ids.iter().map(|c| c.as_string::<i32>()).collect();
        let exogenous: Vec<ArrayRef> = self
            .layout
            .exogenous
            .iter()
            .map(|(_, i)| cast(batch.column(*i), &DataType::Float64))
            .collect::<Result<_, _>>()?;
        let exogenous: Vec<_> = exogenous
            .iter()
            .map(|c| c.as_primitive::<Float64Type>())
            .collect();
        for r in 0..n {
            if times.is_null(r) {
                self.timeless += 1;
                continue;
            }
            let same = self.current.as_ref().is_some_and(|(key, _)| {
                key.iter().zip(&ids).all(|(k, c)| match k {
                    None => c.is_null(r),
                    Some(k) => c.is_valid(r) && c.value(r) == k,
                })
            });
            if !same {
                let key: SeriesKey = ids
                    .iter()
                    .map(|c| c.is_valid(r).then(|| c.value(r).to_string()))
                    .collect();
                self.switch_to(key)?;
            }
            let Some((_, series)) = self.current.as_mut() else {
                continue;
            };
            series
                .rows
                .push((times.value(r), values.is_valid(r).then(|| values.value(r))));
            for (col, out) in exogenous.iter().zip(series.exogenous.iter_mut()) {
                out.push(col.is_valid(r).then(|| col.value(r)));
            }
            self.open_rows += 1;
        }
        if self.ready_rows >= CHUNK_ROWS || self.ready.len() >= CHUNK_SERIES {
            self.fit_ready(ctx)?;
            (ctx.progress)(if self.prepared.is_empty() {
                format!(
                    "{} series fitted, {} row(s) read",
                    self.fitted.len(),
                    self.rows
                )
            } else {
                format!(
                    "{} series read ({} row(s)), held for a model across them",
                    self.prepared.len() + self.fitted.len(),
                    self.rows
                )
            });
        }
        Ok(())
    }

    /// Make `key` the current series; with grouped input the previous one is complete.
    fn switch_to(&mut self, key: SeriesKey) -> ModelResult<()> {
        if let Some((previous, series)) = self.current.take() {
            if self.grouped {
                self.close(previous, series);
            } else {
                self.open.insert(previous, series);
            }
        }
        if self.grouped && self.closed.contains(&key) {
            return Err(ModelError::BadTrainingData(format!(
                "rows of {} arrived after another series' rows although the input was \
                     grouped by id",
                label(&key, &self.ids)
            )));
        }
        let exogenous = self.layout.exogenous.len();
        let series = self.open.remove(&key).unwrap_or_else(|| OpenSeries {
            rows: vec![],
            exogenous: vec![vec![]; exogenous],
        });
        self.current = Some((key, series));
        Ok(())
    }

    /// Move a complete series to the ones waiting for a fit.
    fn close(&mut self, key: SeriesKey, series: OpenSeries) {
        self.open_rows -= series.rows.len();
        self.ready_rows += series.rows.len();
        self.closed.insert(key.clone());
        self.ready.push((key, series));
    }

    /// Fit (or, for a global method, prepare) the series waiting.
    fn fit_ready(&mut self, ctx: &mut TrainContext) -> ModelResult<()> {
        let ready = std::mem::take(&mut self.ready);
        self.ready_rows = 0;
        if self.global() || self.network {
            let ids = &self.ids;
            let nanos = self.nanos;
            let prepared = ready
                .into_par_iter()
                .map(|(id, open)| {
                    let axis = TimeAxis::detect(open.rows.iter().map(|r| r.0), nanos);
                    let rows = axis.rows_on_axis(open.rows, nanos);
                    let series = regularize(&rows, None).map_err(|e| {
                        ModelError::BadTrainingData(format!("{}: {e}", label(&id, ids)))
                    })?;
                    let exogenous = open
                        .exogenous
                        .iter()
                        .map(|col| {
                            let rows: Vec<(i64, Option<f64>)> =
                                rows.iter().zip(col).map(|(r, v)| (r.0, *v)).collect();
                            on_grid(&rows, series.start, series.step, series.values.len())
                        })
                        .collect();
                    Ok(PreparedSeries {
                        id,
                        axis,
                        series,
                        exogenous,
                    })
                })
                .collect::<ModelResult<Vec<_>>>()?;
            self.prepared_values += prepared
                .iter()
                .map(|p| p.series.values.len())
                .sum::<usize>();
            self.prepared.extend(prepared);
            if self.network && self.prepared_values > NETWORK_MAX_HELD {
                // Too many values to hold: fit what is held and stream the rest.
                self.network = false;
                self.pending.push(format!(
                    "auto: the series hold more than {NETWORK_MAX_HELD} values, so no network \
                     across them is tried (USING nbeats trains one)"
                ));
                let prepared = std::mem::take(&mut self.prepared);
                self.prepared_values = 0;
                let fitted =
                    fit_prepared_each(prepared, vec![], &self.req, self.nanos, ids, ctx.cancel)?;
                self.fitted.extend(fitted);
            }
        } else {
            let groups = ready.into_iter().map(|(id, s)| (id, s.rows)).collect();
            let fitted = fit_each(groups, &self.req, self.nanos, &self.ids, ctx.cancel)?;
            self.fitted.extend(fitted);
        }
        Ok(())
    }

    /// The input has ended: fit (or, for a global method, prepare) every series left. After it,
    /// [`ForecastTrainer::held_bytes`] includes what a global fit will need.
    pub fn end_of_input(&mut self, ctx: &mut TrainContext) -> ModelResult<()> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        self.flush_notes(ctx);
        let mut open: Vec<(SeriesKey, OpenSeries)> = self.open.drain().collect();
        open.extend(self.current.take());
        open.sort_by(|a, b| a.0.cmp(&b.0));
        self.open_rows = 0;
        self.ready_rows += open.iter().map(|s| s.1.rows.len()).sum::<usize>();
        self.ready.extend(open);
        let series = self.fitted.len() + self.prepared.len() + self.ready.len();
        if series == 0 {
            return Err(ModelError::BadTrainingData(
                "the training query returned no rows with a time".into(),
            ));
        }
        if self.timeless > 0 {
            (ctx.progress)(format!("{} row(s) without a time skipped", self.timeless));
        }
        let left = series - self.fitted.len();
        (ctx.progress)(if left == series {
            format!(
                "fitting {series} series from {} row(s), horizon {}",
                self.rows, self.req.horizon
            )
        } else {
            format!(
                "fitting the last {left} of {series} series ({} row(s) read)",
                self.rows
            )
        });
        self.fit_ready(ctx)?;
        if self.global() {
            self.prepared.sort_by(|a, b| a.id.cmp(&b.id));
            let names = self
                .layout
                .exogenous
                .iter()
                .map(|(n, _)| n.clone())
                .collect();
            self.plan = Some(GlobalPlan::new(
                &self.prepared,
                &self.req,
                names,
                self.nanos,
            )?);
        }
        if self.network {
            self.prepared.sort_by(|a, b| a.id.cmp(&b.id));
            self.network_plan = network_plan(&self.prepared, &self.req, self.nanos)?;
        }
        Ok(())
    }

    /// Fit what is left and build the model.
    pub fn finish(mut self, ctx: &mut TrainContext) -> ModelResult<ModelArtifact> {
        self.end_of_input(ctx)?;
        let (mut series, global) = if let Some(plan) = self.plan.take() {
            let prepared = std::mem::take(&mut self.prepared);
            let (series, global) = fit_global(prepared, &self.req, plan, ctx)?;
            (series, Some(Box::new(global)))
        } else if self.network {
            let prepared = std::mem::take(&mut self.prepared);
            let given = match self.network_plan.take() {
                Some(plan) => network_candidates(&prepared, &plan, self.req.horizon, ctx)?,
                None => vec![],
            };
            let mut fitted = std::mem::take(&mut self.fitted);
            fitted.extend(fit_prepared_each(
                prepared, given, &self.req, self.nanos, &self.ids, ctx.cancel,
            )?);
            (fitted, None)
        } else {
            (std::mem::take(&mut self.fitted), None)
        };
        // Grouped input arrives in the id columns' own order; the model keeps its series in
        // the order of their ids as text, whichever way they were read.
        series.sort_by(|a, b| a.id.cmp(&b.id));
        let model = ForecastModel {
            time: self.time,
            value: self.value,
            ids: self.ids,
            method: self.req.method,
            horizon: self.req.horizon,
            level: self.req.level,
            season_length: self.req.season_length,
            series,
            global,
        };
        Ok(model_artifact(model, &self.req, self.started, ctx))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::arrow::datatypes::Field;

    use super::*;
    use crate::model::Estimator;

    fn run<T>(f: impl FnOnce(&mut TrainContext) -> T) -> (T, Vec<String>) {
        TrainContext::collecting(f)
    }

    /// `series` series of 60 hourly-like integer ticks with a period of 6, in batches of
    /// `batch` rows, grouped by id (`id` ascending).
    fn batches(series: i64, batch: usize) -> (Arc<Schema>, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("t", DataType::Int64, true),
            Field::new("v", DataType::Float64, true),
        ]));
        let mut rows = vec![];
        for s in 0..series {
            for t in 0..60i64 {
                rows.push((
                    s,
                    t,
                    (s * 10) as f64 + [0.0, 2.0, 5.0, 3.0, 1.0, 0.5][(t % 6) as usize],
                ));
            }
        }
        let out = rows
            .chunks(batch)
            .map(|c| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from_iter_values(c.iter().map(|r| r.0))),
                        Arc::new(Int64Array::from_iter_values(c.iter().map(|r| r.1))),
                        Arc::new(Float64Array::from_iter_values(c.iter().map(|r| r.2))),
                    ],
                )
                .expect("batch")
            })
            .collect();
        (schema, out)
    }

    fn request() -> ForecastRequest {
        ForecastRequest::new(
            "v",
            "t",
            &["id".to_string()],
            Some("seasonal_naive"),
            &BTreeMap::from([("horizon".to_string(), "6".to_string())]),
        )
        .expect("request")
    }

    fn train(grouped: bool, batch: usize) -> (ForecastModel, Vec<String>, usize) {
        let (schema, input) = batches(600, batch);
        let (out, lines) = run(|ctx| {
            let mut t = ForecastTrainer::new(&schema, &request())?;
            assert_eq!(t.sort_columns(), Some(vec![0, 1]));
            if grouped {
                t.input_grouped();
            }
            let mut most = 0;
            for b in &input {
                t.push(b, ctx)?;
                most = most.max(t.held_bytes());
            }
            Ok::<_, ModelError>((t.finish(ctx)?, most))
        });
        let (artifact, most) = out.expect("trained");
        let Estimator::Forecast(model) = artifact.estimator else {
            panic!("not a forecast model")
        };
        (model, lines, most)
    }

    #[test]
    fn grouped_input_is_fitted_in_chunks_with_the_same_model() {
        let (grouped, lines, held_grouped) = train(true, 1000);
        let (whole, _, held_whole) = train(false, 1000);
        assert_eq!(grouped.series.len(), 600);
        assert_eq!(grouped, whole, "same series, forecasts and order");
        // Most series were fitted before the input ended.
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("516 series fitted, 31000 row(s) read")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "fitting the last 84 of 600 series (36000 row(s) read)"),
            "{lines:?}"
        );
        // Grouped, at most a chunk of series and a batch are held beside the fitted ones.
        let bound = (CHUNK_SERIES * 60 + 1000) * ROW_BYTES + 600 * fitted_bytes(6);
        assert!(
            held_grouped <= bound && held_grouped < held_whole,
            "grouped {held_grouped} B (bound {bound}), ungrouped {held_whole} B"
        );
        // Ids as text, in text order: "0", "1", "10", "100", ...
        assert_eq!(grouped.series[2].id, vec![Some("10".to_string())]);
        // seasonal_naive repeats the last period.
        let s = &grouped.series[1];
        assert_eq!(s.forecast, vec![10.0, 12.0, 15.0, 13.0, 11.0, 10.5]);
    }

    #[test]
    fn a_series_that_comes_back_in_grouped_input_is_an_error() {
        let (schema, mut input) = batches(3, 60);
        input.push(input[0].clone());
        let (out, _) = run(|ctx| {
            let mut t = ForecastTrainer::new(&schema, &request())?;
            t.input_grouped();
            for b in &input {
                t.push(b, ctx)?;
            }
            t.finish(ctx)
        });
        match out {
            Err(ModelError::BadTrainingData(m)) => assert!(m.contains("id=0"), "{m}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_projected_input_holds_only_the_columns_read() {
        // The query has an unused column first: the trainer reads (t, v, id) after it.
        let schema = Schema::new(vec![
            Field::new("note", DataType::Utf8, true),
            Field::new("id", DataType::Int64, true),
            Field::new("t", DataType::Int64, true),
            Field::new("v", DataType::Float64, true),
        ]);
        let (_, input) = batches(3, 60);
        let (out, lines) = run(|ctx| {
            let mut t = ForecastTrainer::new(&schema, &request())?;
            assert_eq!(t.project_input(), vec![2, 3, 1]);
            assert_eq!(t.sort_columns(), Some(vec![2, 0]));
            t.input_grouped();
            for b in &input {
                // (id, t, v) batches reordered to (t, v, id).
                let b = b.project(&[1, 2, 0]).map_err(ModelError::from)?;
                t.push(&b, ctx)?;
            }
            t.finish(ctx)
        });
        let Estimator::Forecast(model) = out.expect("trained").estimator else {
            panic!("not a forecast model")
        };
        assert_eq!(model.series.len(), 3);
        assert_eq!(
            model.series[1].forecast,
            vec![10.0, 12.0, 15.0, 13.0, 11.0, 10.5]
        );
        assert!(
            lines.iter().any(|l| l.contains("note not used")),
            "{lines:?}"
        );
    }

    #[test]
    fn no_rows_is_an_error() {
        let (schema, _) = batches(1, 60);
        let (out, _) = run(|ctx| ForecastTrainer::new(&schema, &request())?.finish(ctx));
        assert!(matches!(out, Err(ModelError::BadTrainingData(_))));
    }
}
