//! Running model statements: train and register (`CREATE MODEL`), `DROP MODEL`,
//! `SHOW MODELS` and `DESCRIBE MODEL`.
//!
//! Training reads the `AS` query's rows, then fits on a blocking thread (the algorithms use
//! every core through rayon) while progress lines go to the client as NOTICEs. A cancel request
//! or a dropped connection drops the statement's future, which raises the training's cancel
//! flag; the trainer stops at its next iteration and nothing is registered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use futures::StreamExt;
use prognos_catalog::{Admission, CatalogError, Privilege, Securable};
use prognos_models::anomaly::stored::SeriesDetectorRequest;
use prognos_models::forecast::stored::ForecastRequest;
use prognos_models::forecast::trainer::ForecastTrainer;
use prognos_models::{
    Algorithm, ModelArtifact, ModelError, ModelResult, TrainContext, TrainRequest,
};

use super::{Engine, ModelStatement, Output, Session};
use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_gate::{Holdout, Lifecycle};

/// What `SHOW MODELS` returns.
const SHOW_MODELS_SQL: &str = "SELECT name, version, task, algorithm, target, metric, \
     metric_value, train_rows, created_at FROM system.models ORDER BY name";

fn describe_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("property", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]))
}

/// Result columns of a model statement (`None` = a command without rows).
pub(super) async fn result_schema(
    _engine: &Engine,
    session: &Session,
    m: &ModelStatement,
) -> EngineResult<Option<SchemaRef>> {
    Ok(match m {
        ModelStatement::Show => Some(Arc::new(
            session
                .ctx()
                .sql(SHOW_MODELS_SQL)
                .await?
                .schema()
                .as_arrow()
                .clone(),
        )),
        ModelStatement::Describe { .. } => Some(describe_schema()),
        _ => None,
    })
}

fn command(tag: &str) -> Output {
    Output::Command {
        tag: tag.to_string(),
        rows: None,
    }
}

/// What `CREATE MODEL` trains.
enum TrainJob {
    /// A tabular model (`PREDICT target` or clustering).
    Rows(TrainRequest),
    /// A forecasting model (`FORECAST value TIME t`).
    Forecast(ForecastRequest),
    /// A series detector (`DETECT ANOMALIES IN value TIME t`).
    Series(SeriesDetectorRequest),
}

/// Raises the flag when dropped (statement cancelled, connection gone) unless disarmed.
struct CancelOnDrop(Arc<AtomicBool>, bool);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// What `CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name` finds.
enum Creating {
    /// `IF NOT EXISTS` found the model (a NOTICE said so): nothing to do.
    Skip,
    /// A new model: its creator becomes its owner.
    New,
    /// A new version of an existing model (`OR REPLACE`, by its owner).
    NewVersion,
}

/// Whether `CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name` goes ahead; an error when the
/// name cannot be created or the role may not: creating needs `CREATE MODEL`, a new version
/// ownership of the model.
fn may_create(
    engine: &Engine,
    session: &Session,
    name: &str,
    replace: bool,
    if_not_exists: bool,
) -> EngineResult<Creating> {
    let exists = engine.registry.get(name).is_some();
    if if_not_exists && !replace && exists {
        session.notice(format!("model \"{name}\" already exists, skipping"));
        return Ok(Creating::Skip);
    }
    let p = engine.privileges(session);
    crate::privileges::require(&p, &Securable::Database, Privilege::CreateModel).map_err(|_| {
        EngineError::statement(
            StatusCode::InsufficientPrivilege,
            "permission denied to create models: the role needs GRANT CREATE MODEL",
        )
    })?;
    engine.registry.check_create(name, replace)?;
    if exists {
        crate::privileges::require_owner(&p, &Securable::Model(name.to_string()))?;
    }
    crate::statements::not_transactional(session, "CREATE MODEL");
    Ok(if exists {
        Creating::NewVersion
    } else {
        Creating::New
    })
}

/// The checks of a statement that changes model `name`'s lifecycle (`statement`: its name):
/// not inside a transaction block (a NOTICE), the model exists (`42704`), and the session's
/// role owns it (`42501`).
fn owned_model(
    engine: &Engine,
    session: &Session,
    name: &str,
    statement: &str,
) -> EngineResult<()> {
    crate::statements::not_transactional(session, statement);
    if engine.registry.get(name).is_none() {
        return Err(CatalogError::ModelNotFound(name.to_string()).into());
    }
    crate::privileges::require_owner(
        &engine.privileges(session),
        &Securable::Model(name.to_string()),
    )
}

/// `42501` unless the session's role may use model `name` (a missing model is `42704`).
fn require_usage(engine: &Engine, session: &Session, name: &str) -> EngineResult<()> {
    if engine.registry.get(name).is_none() {
        return Err(CatalogError::ModelNotFound(name.to_string()).into());
    }
    crate::privileges::require(
        &engine.privileges(session),
        &Securable::Model(name.to_string()),
        Privilege::Usage,
    )
}

/// Run a model statement.
pub(super) async fn execute(
    engine: &Engine,
    session: &Session,
    m: &ModelStatement,
) -> EngineResult<Output> {
    match m {
        ModelStatement::Show => {
            let df = session.ctx().sql(SHOW_MODELS_SQL).await?;
            Ok(Output::Rows(df.execute_stream().await?))
        }
        ModelStatement::Describe { name } => {
            require_usage(engine, session, name)?;
            describe(engine, name).await
        }
        ModelStatement::Import {
            name,
            replace,
            if_not_exists,
            source,
            options,
        } => {
            let creating = may_create(engine, session, name, *replace, *if_not_exists)?;
            if let Creating::Skip = creating {
                return Ok(command("CREATE MODEL"));
            }
            let (version, summary) =
                crate::model_import::import(engine, session, name, source, options, *replace)
                    .await?;
            if let Creating::New = creating {
                engine.record_owner(session, Securable::Model(name.clone()))?;
            }
            engine.bump_epoch();
            session.notice(format!("model \"{name}\" version {version}: {summary}"));
            Ok(command("CREATE MODEL"))
        }
        ModelStatement::Export {
            name,
            version,
            target,
        } => {
            require_usage(engine, session, name)?;
            let size = crate::model_export::export(engine, session, name, *version, target).await?;
            session.notice(format!(
                "model \"{name}\" written to {target} as ONNX ({size} bytes)"
            ));
            Ok(command("EXPORT MODEL"))
        }
        ModelStatement::Drop {
            name,
            if_exists,
            version: Some(version),
        } => {
            if *if_exists && engine.registry.get(name).is_none() {
                crate::statements::not_transactional(session, "DROP MODEL");
                session.notice(format!("model \"{name}\" does not exist, skipping"));
                return Ok(command("DROP MODEL"));
            }
            owned_model(engine, session, name, "DROP MODEL")?;
            engine.registry.drop_version(name, *version).await?;
            engine.bump_epoch();
            Ok(command("DROP MODEL"))
        }
        ModelStatement::Drop {
            name,
            if_exists,
            version: None,
        } => {
            crate::statements::not_transactional(session, "DROP MODEL");
            if engine.registry.get(name).is_some() {
                crate::privileges::require_owner(
                    &engine.privileges(session),
                    &Securable::Model(name.clone()),
                )?;
            }
            let existed = engine.registry.drop_model(name).await?;
            if existed {
                engine.forget_object(&Securable::Model(name.clone()));
            }
            engine.bump_epoch();
            if !existed {
                if *if_exists {
                    session.notice(format!("model \"{name}\" does not exist, skipping"));
                } else {
                    return Err(CatalogError::ModelNotFound(name.clone()).into());
                }
            }
            Ok(command("DROP MODEL"))
        }
        ModelStatement::Alter { name, action } => {
            owned_model(engine, session, name, "ALTER MODEL")?;
            crate::model_lifecycle::alter(engine, session, name, action).await?;
            engine.bump_epoch();
            Ok(command("ALTER MODEL"))
        }
        ModelStatement::Create { .. } => {
            create(engine, session, m).await?;
            Ok(command("CREATE MODEL"))
        }
        ModelStatement::Retrain { name } => {
            owned_model(engine, session, name, "RETRAIN MODEL")?;
            crate::model_jobs::retrain(engine, session, name, crate::model_jobs::Trigger::Manual)
                .await?;
            Ok(command("RETRAIN MODEL"))
        }
    }
}

/// `CREATE [OR REPLACE] MODEL` (`m` is one): train, judge by the validation gate, store.
/// Returns the version made and how it was admitted; `None` when `IF NOT EXISTS` found the
/// model.
pub(crate) async fn create(
    engine: &Engine,
    session: &Session,
    m: &ModelStatement,
) -> EngineResult<Option<(u32, Admission)>> {
    let ModelStatement::Create {
        name,
        replace,
        if_not_exists,
        target,
        series,
        detect_anomalies,
        algorithm,
        options,
        query,
        query_text,
    } = m
    else {
        return Err(EngineError::statement(
            StatusCode::Internal,
            "create() takes a CREATE MODEL statement",
        ));
    };
    let creating = may_create(engine, session, name, *replace, *if_not_exists)?;
    if let Creating::Skip = creating {
        return Ok(None);
    }
    let mut options = options.clone();
    let lifecycle = Lifecycle::take_from(&mut options)?;
    // Shown as `training` in system.model_versions until this returns.
    let _training = engine.registry.begin_training(name, &session.user());
    let options = &options;
    let job = match series {
        Some(f) if *detect_anomalies => {
            if let Some(a) = algorithm {
                return Err(CatalogError::Model(ModelError::InvalidParameter(format!(
                    "DETECT ANOMALIES IN value TIME t models use prognos's series detector \
                     (the one ANOMALY(TABLE ...) runs), not {a}: drop USING"
                )))
                .into());
            }
            TrainJob::Series(SeriesDetectorRequest {
                value: f.value.clone(),
                time: f.time.clone(),
                ids: f.ids.clone(),
                options: options.clone(),
            })
        }
        Some(f) => TrainJob::Forecast(
            ForecastRequest::new(&f.value, &f.time, &f.ids, algorithm.as_deref(), options)
                .map_err(CatalogError::Model)?,
        ),
        None if *detect_anomalies => {
            let a = Algorithm::parse(algorithm.as_deref().unwrap_or("isolation_forest"))
                .map_err(CatalogError::Model)?;
            if a != Algorithm::IsolationForest {
                return Err(CatalogError::Model(ModelError::InvalidParameter(format!(
                    "DETECT ANOMALIES models use isolation_forest, not {}",
                    a.name()
                )))
                .into());
            }
            TrainJob::Rows(TrainRequest {
                target: None,
                algorithm: a,
                options: options.clone(),
            })
        }
        None => {
            let a = Algorithm::parse(algorithm.as_deref().unwrap_or("auto"))
                .map_err(CatalogError::Model)?;
            if a == Algorithm::IsolationForest {
                return Err(CatalogError::Model(ModelError::InvalidParameter(
                    "isolation_forest models are created with CREATE MODEL m DETECT \
                         ANOMALIES AS ..."
                        .into(),
                ))
                .into());
            }
            TrainJob::Rows(TrainRequest {
                target: target.clone(),
                algorithm: a,
                options: options.clone(),
            })
        }
    };
    let (artifact, holdout) = match job {
        TrainJob::Rows(req) => {
            let sizing = req.clone();
            let extra = move |rows: usize, cols: usize| sizing.working_memory(rows, cols);
            train_rows(
                session,
                name,
                query,
                engine,
                extra,
                move |names, columns, ctx| {
                    prognos_models::train_with_holdout(names, columns, &req, ctx)
                },
            )
            .await?
        }
        TrainJob::Series(req) => {
            // What tuning holds per point, about: the sorted values and labels, the scores
            // and novelty of the novelty window being compared, and `detect`'s working
            // vectors for the series being scored.
            let extra = |rows: usize, _: usize| rows * 96;
            train_rows(
                session,
                name,
                query,
                engine,
                extra,
                move |names, columns, ctx| {
                    prognos_models::anomaly::stored::train(names, columns, &req, ctx)
                        .map(|a| (a, vec![]))
                },
            )
            .await?
        }
        TrainJob::Forecast(req) => (
            train_forecast_model(session, name, req, query, engine).await?,
            None,
        ),
    };
    let candidate = Arc::new(artifact);
    let verdict = crate::model_gate::judge(engine, name, &candidate, holdout, &lifecycle).await?;
    let artifact = Arc::try_unwrap(candidate).unwrap_or_else(|a| (*a).clone());
    let summary = artifact
        .trials
        .iter()
        .find(|t| t.chosen)
        .map(|t| format!("{} {} {:.4}", t.algorithm.name(), t.metric, t.value))
        .unwrap_or_default();
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let version = engine
        .registry
        .register(
            name,
            artifact,
            &[],
            query_text,
            &created,
            *replace,
            &verdict.admission,
            &session.user(),
            m.definition().as_deref(),
        )
        .await?;
    if let Creating::New = creating {
        engine.record_owner(session, Securable::Model(name.clone()))?;
    }
    engine.bump_epoch();
    session.notice(format!("model \"{name}\" version {version}: {summary}"));
    if let Some(n) = verdict.notice {
        session.notice(n);
    }
    crate::model_lifecycle::announce(engine, session, name, version, &verdict.admission);
    Ok(Some((version, verdict.admission)))
}

/// Train a model on the training query's rows: read them, then `fit` them on a blocking
/// thread (`fit` returns the model and the indices of the rows it held out for validation,
/// which are returned for the validation gate). `working_memory(rows, columns)`: what
/// fitting holds besides the rows and their feature matrix, reserved with them.
async fn train_rows(
    session: &Session,
    name: &str,
    query: &Query,
    engine: &Engine,
    working_memory: impl FnOnce(usize, usize) -> usize,
    fit: impl FnOnce(
        &[String],
        &[ArrayRef],
        &mut TrainContext,
    ) -> ModelResult<(ModelArtifact, Vec<u32>)>
    + Send
    + 'static,
) -> EngineResult<(ModelArtifact, Option<Holdout>)> {
    let (names, columns) = read_training_rows(engine, session, query).await?;
    // The training set and the matrices built from it (f32 values, u8 bins, row
    // indices, gradients: about 4× the rows × columns of 4 bytes) are reserved in the
    // session's memory pool, so `engine.memory_limit_mb` bounds training too; so is what a
    // network holds besides (its parameters and a batch's activations).
    let n_rows = columns.first().map(|c| c.len()).unwrap_or(0);
    let estimate = columns
        .iter()
        .map(|c| c.get_array_memory_size())
        .sum::<usize>()
        + n_rows * columns.len() * 16
        + n_rows * 32
        + working_memory(n_rows, columns.len());
    let reservation = MemoryConsumer::new(format!("CREATE MODEL {name}"))
        .register(&session.ctx().runtime_env().memory_pool);
    reservation
        .try_grow(estimate)
        .map_err(|e| too_big(name, "about", estimate, e))?;
    session.notice(format!(
        "training query returned {n_rows} row(s), {} column(s)",
        names.len()
    ));
    let flag = Arc::new(AtomicBool::new(false));
    let mut guard = CancelOnDrop(Arc::clone(&flag), true);
    let tx = session.notice_sender();
    let (kept_names, kept_columns) = (names.clone(), columns.clone());
    let (artifact, held_out) = tokio::task::spawn_blocking(move || {
        let mut progress = progress_to(tx);
        let mut ctx = TrainContext {
            progress: &mut progress,
            cancel: &flag,
        };
        fit(&names, &columns, &mut ctx)
    })
    .await
    .map_err(training_failed)?
    .map_err(CatalogError::Model)?;
    guard.1 = false;
    // The held-out rows, for the validation gate to score the deployed version on.
    let holdout = if held_out.is_empty() {
        None
    } else {
        let indices = datafusion::arrow::array::UInt32Array::from(held_out);
        let columns = kept_columns
            .iter()
            .map(|c| datafusion::arrow::compute::take(c.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()?;
        Some(Holdout {
            names: kept_names,
            columns,
        })
    };
    drop(reservation);
    Ok((artifact, holdout))
}

/// Train a forecasting model while its training query is read. Unless the model is one
/// series or `gbdt_lag`, the query is sorted by its id and time columns (DataFusion's sort,
/// which spills under the memory limit) so that each series is complete when the next id starts;
/// the trainer fits complete series in chunks on a blocking thread while the next batches
/// are read, and keeps only their forecasts. What the trainer holds is reserved in the
/// session's memory pool.
async fn train_forecast_model(
    session: &Session,
    name: &str,
    req: ForecastRequest,
    query: &Query,
    engine: &Engine,
) -> EngineResult<ModelArtifact> {
    let df = plan_training_query(engine, session, query).await?;
    let mut trainer =
        ForecastTrainer::new(df.schema().as_arrow(), &req).map_err(CatalogError::Model)?;
    // Only the columns the model reads are scanned and sorted.
    let column = |df: &DataFrame, i: usize| {
        let (qualifier, field) = df.schema().qualified_field(i);
        Expr::Column(Column::new(qualifier.cloned(), field.name()))
    };
    let read = trainer.project_input();
    let columns: Vec<Expr> = read.into_iter().map(|i| column(&df, i)).collect();
    let df = df.select(columns)?;
    let df = match trainer.sort_columns() {
        Some(positions) => {
            trainer.input_grouped();
            let order = positions
                .into_iter()
                .map(|i| column(&df, i).sort(true, true))
                .collect();
            df.sort(order)?
        }
        None => df,
    };
    let mut stream = df.execute_stream().await?;
    let reservation = MemoryConsumer::new(format!("CREATE MODEL {name}"))
        .register(&session.ctx().runtime_env().memory_pool);
    let flag = Arc::new(AtomicBool::new(false));
    let mut guard = CancelOnDrop(Arc::clone(&flag), true);
    let notices = session.notice_sender();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let cancel = Arc::clone(&flag);
    let model = name.to_string();
    let row_limit = engine.models_config.max_training_rows;
    let training = tokio::task::spawn_blocking(move || -> EngineResult<ModelArtifact> {
        let mut progress = progress_to(notices);
        let mut ctx = TrainContext {
            progress: &mut progress,
            cancel: &cancel,
        };
        let mut rows = TrainingRows::new(row_limit);
        let reserve = |trainer: &ForecastTrainer| {
            let held = trainer.held_bytes();
            reservation
                .try_resize(held)
                .map_err(|e| too_big(&model, "at least", held, e))
        };
        while let Some(batch) = rx.blocking_recv() {
            rows.add(batch.num_rows())?;
            trainer
                .push(&batch, &mut ctx)
                .map_err(CatalogError::Model)?;
            reserve(&trainer)?;
        }
        trainer
            .end_of_input(&mut ctx)
            .map_err(CatalogError::Model)?;
        reserve(&trainer)?;
        Ok(trainer.finish(&mut ctx).map_err(CatalogError::Model)?)
    });
    let mut read_error = None;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(batch) => {
                // A closed channel: the trainer stopped (its error is returned below).
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
    }
    if read_error.is_some() {
        flag.store(true, Ordering::SeqCst);
    }
    drop(tx);
    let trained = training.await.map_err(training_failed)?;
    if let Some(e) = read_error {
        return Err(e.into());
    }
    let artifact = trained?;
    guard.1 = false;
    Ok(artifact)
}

/// Counts a training query's rows against `models.max_training_rows`.
struct TrainingRows {
    seen: u64,
    limit: u64,
}

impl TrainingRows {
    fn new(limit: u64) -> Self {
        Self { seen: 0, limit }
    }

    /// Count `n` more rows; `54000` once the limit is passed.
    fn add(&mut self, n: usize) -> EngineResult<()> {
        self.seen += n as u64;
        if self.limit > 0 && self.seen > self.limit {
            return Err(EngineError::statement(
                StatusCode::ProgramLimitExceeded,
                format!(
                    "the training query returned more than {} rows (models.max_training_rows)",
                    self.limit
                ),
            ));
        }
        Ok(())
    }
}

/// Sends a trainer's progress lines to the client (as NOTICEs) and the log.
fn progress_to(
    notices: Option<tokio::sync::mpsc::UnboundedSender<crate::session::Notice>>,
) -> impl FnMut(String) + Send {
    move |message: String| {
        tracing::info!("{message}");
        if let Some(tx) = &notices {
            let _ = tx.send(crate::session::Notice {
                warning: false,
                message,
            });
        }
    }
}

/// Training `name` needs `bytes` (`about`, `at least`, ...) and the memory pool refused.
fn too_big(name: &str, how: &str, bytes: usize, e: DataFusionError) -> EngineError {
    EngineError::statement(
        StatusCode::OutOfMemory,
        format!(
            "training \"{name}\" needs {how} {} MiB, more than the memory limit allows: {e}",
            bytes.div_ceil(1024 * 1024)
        ),
    )
}

fn training_failed(e: tokio::task::JoinError) -> EngineError {
    EngineError::statement(StatusCode::Internal, format!("training failed: {e}"))
}

/// Plan the training query in the session (with the engine's rewrites of a user query, made
/// against the models registered now).
async fn plan_training_query(
    engine: &Engine,
    session: &Session,
    query: &Query,
) -> EngineResult<DataFrame> {
    let stmt = engine.prepare_user_statement(DFStatement::Statement(Box::new(
        SqlStatement::Query(Box::new(query.clone())),
    )));
    let plan = session.ctx().state().statement_to_plan(stmt).await?;
    // The model learns only from what its trainer may read.
    crate::privileges::check_plan(engine, session, &plan)?;
    Ok(session.ctx().execute_logical_plan(plan).await?)
}

/// Run the training query; one array per column.
async fn read_training_rows(
    engine: &Engine,
    session: &Session,
    query: &Query,
) -> EngineResult<(Vec<String>, Vec<ArrayRef>)> {
    let df = plan_training_query(engine, session, query).await?;
    let schema = df.schema().as_arrow().clone();
    let mut stream = df.execute_stream().await?;
    let mut batches = vec![];
    let mut rows = TrainingRows::new(engine.models_config.max_training_rows);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows.add(batch.num_rows())?;
        batches.push(batch);
    }
    let names = schema.fields().iter().map(|f| f.name().clone()).collect();
    let columns = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            if parts.is_empty() {
                Ok(datafusion::arrow::array::new_empty_array(
                    schema.field(i).data_type(),
                ))
            } else {
                concat(&parts)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((names, columns))
}

async fn describe(engine: &Engine, name: &str) -> EngineResult<Output> {
    let entry = engine
        .registry
        .get(name)
        .ok_or_else(|| CatalogError::ModelNotFound(name.to_string()))?;
    let v = entry
        .current_version()
        .ok_or_else(|| CatalogError::ModelNotFound(name.to_string()))?;
    let mut rows: Vec<(String, Option<String>)> = vec![
        ("name".into(), Some(entry.name.clone())),
        ("version".into(), Some(v.version.to_string())),
        ("versions".into(), Some(entry.versions.len().to_string())),
        (
            "task".into(),
            Some(format!("{:?}", v.task).to_ascii_lowercase()),
        ),
        ("algorithm".into(), Some(v.algorithm.clone())),
        ("target".into(), v.target.clone()),
        ("created_at".into(), Some(v.created_at.clone())),
        ("train_rows".into(), Some(v.train_rows.to_string())),
        (
            "validation_rows".into(),
            Some(v.validation_rows.to_string()),
        ),
        (
            "train_seconds".into(),
            Some(format!("{:.3}", v.train_seconds)),
        ),
    ];
    for (i, f) in v.features.iter().enumerate() {
        rows.push((format!("feature {}", i + 1), Some(f.clone())));
    }
    for port in &v.ports {
        if let Some((kind, rest)) = port.split_once(' ') {
            rows.push((kind.to_string(), Some(rest.to_string())));
        }
    }
    for (k, m) in &v.metrics.values {
        rows.push((format!("metric {k}"), Some(format!("{m:.6}"))));
    }
    if let Some(c) = &v.metrics.confusion {
        rows.push(("confusion_matrix".into(), serde_json::to_string(c).ok()));
    }
    // An imported graph's device: asked for, and what it gets on this server (read from the
    // loaded version; a version that cannot load shows no device).
    if let Ok((_, artifact)) = engine.registry.snapshot().load(name).await
        && let Some((requested, effective)) = artifact.devices()
    {
        rows.push(("device".into(), Some(requested)));
        rows.push(("effective_device".into(), Some(effective)));
    }
    rows.push(("query".into(), Some(v.query.clone())));
    let schema = describe_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.as_deref()))),
        ],
    )?;
    Ok(Output::Rows(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter([Ok(batch)]),
    ))))
}
