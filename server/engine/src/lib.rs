//! The prognos query engine, shared by every frontend (pgwire, Flight SQL).
//!
//! Frontends hand SQL text to [`Engine::parse`], then [`Engine::describe`] or
//! [`Engine::execute`] each statement in a [`Session`]. The engine owns the DataFusion state,
//! intercepts the statements prognos implements itself (managed tables, persistent DDL,
//! Postgres session commands) and streams results as Arrow record batches; it knows nothing of
//! wire protocols.

pub mod audit_log;
pub mod audit_table;
mod backup;
pub mod config;
mod copy;
mod demo;
pub mod error;
pub mod grant_sql;
mod insert_values;
mod masked_table;
mod masking_sql;
mod model_ddl;
mod model_export;
mod model_files;
mod model_gate;
mod model_health;
mod model_import;
mod model_jobs;
mod model_lifecycle;
mod model_monitoring;
mod model_refs;
mod model_rules;
mod model_serving;
pub mod model_sql;
mod orphans;
mod owner_sql;
pub mod parser;
mod pg_compat;
pub mod physical_template;
mod point;
mod policy_table;
mod prediction_writer;
mod privileges;
mod rename;
pub mod role_sql;
mod roles;
pub mod server_files;
mod session;
mod session_memory;
mod statements;
pub mod streams;
mod transaction;
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use object_store::ObjectStore;
use prognos_catalog::system_tables::{RegistryTable, SystemTable};
use prognos_catalog::{ArtifactStores, ModelRegistry, PersistentCatalog};
use prognos_storage::durable::DurableLocalStore;
use prognos_storage::stores::StoreRegistry;
use tracing::{info, warn};

pub use copy::{CopyFormat, CopyInTarget, CopyKind};
pub use model_health::collectors as model_health_collectors;
pub use model_rules::alert_counts;
pub use model_sql::{ModelAction, ModelStatement};
pub use roles::{LoginRole, password_failed};
pub use session::{BlockState, DEFAULT_PG_SETTINGS, Notice, Session, Touched};

/// Imported-model inference per device kind since start: `(device, runs, rows)`.
pub fn inference_counts() -> [(&'static str, u64, u64); 2] {
    prognos_models::onnx::device::inference_counts()
}

use crate::config::OpenOptions;
use crate::error::{EngineError, EngineResult, StatusCode};

/// Name of the one catalog (database) prognos serves.
pub const CATALOG_NAME: &str = "prognos";
/// Default schema of new tables.
pub const DEFAULT_SCHEMA: &str = "public";

/// Schema of the registry's system tables.
pub const SYSTEM_SCHEMA: &str = "system";

/// A statement as the engine runs it.
#[derive(Debug, Clone)]
pub enum Statement {
    /// Anything DataFusion's parser reads (queries, DDL, COPY, SET …).
    Sql(DFStatement),
    /// `CREATE MODEL`, `DROP MODEL`, `SHOW MODELS`, `DESCRIBE MODEL`.
    Model(ModelStatement),
    /// `CREATE / ALTER / DROP ROLE | USER`.
    Role(role_sql::RoleStatement),
    /// `BACKUP TO 'folder'`.
    Backup(String),
}

impl Statement {
    /// The statement as the audit log records it: the statement tree printed (so bound
    /// parameters, which are not in it, never are), with passwords redacted.
    pub fn audit_text(&self) -> String {
        match self {
            Statement::Sql(s) => s.to_string(),
            Statement::Model(m) => match m {
                ModelStatement::Create {
                    name, query_text, ..
                } => format!("CREATE MODEL {name} AS {query_text}"),
                ModelStatement::Import { name, source, .. } => {
                    format!("CREATE MODEL {name} FROM '{source}'")
                }
                ModelStatement::Export { name, target, .. } => {
                    format!("EXPORT MODEL {name} TO '{target}'")
                }
                ModelStatement::Drop {
                    name,
                    version: None,
                    ..
                } => format!("DROP MODEL {name}"),
                ModelStatement::Drop {
                    name,
                    version: Some(v),
                    ..
                } => format!("DROP MODEL {name} VERSION {v}"),
                ModelStatement::Alter { name, action } => format!("ALTER MODEL {name} {action}"),
                ModelStatement::Retrain { name } => format!("RETRAIN MODEL {name}"),
                ModelStatement::Describe { name } => format!("DESCRIBE MODEL {name}"),
                ModelStatement::Show => "SHOW MODELS".to_string(),
            },
            // Role options print with the password redacted.
            Statement::Role(r) => format!("{} {r:?}", r.tag()),
            Statement::Backup(folder) => format!("BACKUP TO '{folder}'"),
        }
    }

    /// The model a model statement names.
    fn model_name(&self) -> Option<&str> {
        match self {
            Statement::Model(
                ModelStatement::Create { name, .. }
                | ModelStatement::Import { name, .. }
                | ModelStatement::Export { name, .. }
                | ModelStatement::Drop { name, .. }
                | ModelStatement::Alter { name, .. }
                | ModelStatement::Retrain { name }
                | ModelStatement::Describe { name },
            ) => Some(name),
            _ => None,
        }
    }
}

/// What a statement produced.
pub enum Output {
    /// A result set, streamed batch by batch.
    Rows(SendableRecordBatchStream),
    /// A command without a result set; `tag` is the Postgres command tag.
    Command {
        /// Command tag (`CREATE TABLE`, `INSERT`, …).
        tag: String,
        /// Rows affected, where the tag carries a count.
        rows: Option<u64>,
    },
    /// `BEGIN` / `START TRANSACTION`.
    TransactionStart(String),
    /// `COMMIT` / `ROLLBACK`.
    TransactionEnd(String),
    /// `COPY … FROM STDIN`: the client sends rows next, loaded with [`Engine::copy_in`].
    CopyIn(CopyInTarget),
    /// `COPY … TO STDOUT`: rows to send in the given layout.
    CopyOut {
        /// The rows.
        stream: SendableRecordBatchStream,
        /// Text or CSV layout.
        format: CopyFormat,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            Output::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Output::TransactionStart(t) => write!(f, "TransactionStart({t})"),
            Output::TransactionEnd(t) => write!(f, "TransactionEnd({t})"),
            Output::CopyIn(t) => write!(f, "CopyIn({})", t.table),
            Output::CopyOut { format, .. } => write!(f, "CopyOut({format:?})"),
        }
    }
}

/// Parameter and result shape of a statement, for `Describe` and prepared statements.
#[derive(Debug, Clone)]
pub struct Described {
    /// Types of `$1..$n` as far as the planner can infer them.
    pub params: Vec<Option<DataType>>,
    /// Result columns, or `None` for statements that return no rows.
    pub schema: Option<SchemaRef>,
    /// The logical plan made while describing, reused by [`Engine::execute_prepared`] while
    /// nothing changed what its names resolve to (the epoch rule of `Engine::bump_epoch`),
    /// and replaced by a new one when something did. Shared by the clones of one statement.
    pub(crate) plan: Option<Arc<std::sync::Mutex<CachedPlan>>>,
}

/// A statement's logical plan kept for its executions.
#[derive(Debug, Clone)]
pub(crate) struct CachedPlan {
    /// The plan, its parameters unbound.
    pub(crate) plan: datafusion::logical_expr::LogicalPlan,
    /// The catalog epoch it was made in.
    pub(crate) epoch: u64,
    /// Whether the logical optimizer has run on it already.
    pub(crate) optimized: bool,
    /// Its physical plan, reused across executions where that is safe.
    pub(crate) template: Arc<physical_template::TemplateSlot>,
}

/// The engine (see module docs).
pub struct Engine {
    base: SessionState,
    catalog: Arc<PersistentCatalog>,
    data_dir: PathBuf,
    local: Arc<dyn ObjectStore>,
    /// Object-store URL for new managed tables (`storage.tables_url`); `None` = the data dir.
    tables_url: Option<String>,
    /// Postgres client compatibility (catalog queries).
    pg_compat: pg_compat::PgCompat,
    /// The catalog epoch of [`Engine::bump_epoch`]'s invalidation rule.
    ddl_epoch: std::sync::atomic::AtomicU64,
    /// Names of the registered table functions (for the `FROM f(...)` rewrites).
    table_functions: std::collections::HashSet<String>,
    /// Names (and aliases) of the registered aggregate functions, lower case (for the
    /// scalar-subquery rewrite).
    aggregate_functions: std::collections::HashSet<String>,
    ddl_lock: tokio::sync::Mutex<()>,
    /// Models and their versions.
    registry: Arc<ModelRegistry>,
    /// Imported models' settings.
    models_config: config::ModelsConfig,
    /// Roles and their passwords.
    roles: Arc<prognos_catalog::RoleStore>,
    /// The bootstrap superuser's name (the role of the engine's own sessions).
    bootstrap_superuser: String,
    /// Where roles may name local files.
    files: server_files::ServerFiles,
    /// Every session's run-time parameter defaults (the configuration gives
    /// `statement_timeout`'s).
    session_defaults: session::Defaults,
    /// The key of the `hash` masking method.
    masking_key: prognos_catalog::masking::MaskingKey,
    /// The audit log; `None` when it is off.
    audit: Option<audit_log::AuditLog>,
    /// The largest result a statement sends, in bytes (`engine.max_result_mb`; 0 = none).
    max_result_bytes: u64,
    /// One session's share of the memory pool, in bytes (`engine.query_memory_mb`; 0 = none).
    session_memory_bytes: usize,
    /// `pg_catalog`'s fixed tables, shared by every session's `pg_catalog`.
    pg_static: Arc<datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables>,
    /// Retrains running now and the record of past ones.
    jobs: model_jobs::Jobs,
    /// Where `PREDICT` calls of logged models send their sampled rows.
    prediction_log: prognos_udfs::prediction_log::LogSink,
    /// Alerts raised by live-metric rules.
    alerts: model_rules::Alerts,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Open the data dir, restore the catalog and (on an empty data dir) load the demo data.
    pub async fn open(config: &OpenOptions) -> EngineResult<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            EngineError::statement(
                StatusCode::IoError,
                format!("cannot create data dir {}: {e}", config.data_dir.display()),
            )
        })?;
        let data_dir = std::fs::canonicalize(&config.data_dir)
            .map_err(|e| EngineError::statement(StatusCode::IoError, format!("data dir: {e}")))?;
        let catalog = Arc::new(PersistentCatalog::open(&data_dir)?);
        let roles = Arc::new(prognos_catalog::RoleStore::open(&data_dir)?);
        let files = server_files::ServerFiles::new(&data_dir, &config.server_files.allow)?;
        let audit = audit_log::AuditLog::open(&data_dir, &config.audit);
        let masking_key = prognos_catalog::masking::MaskingKey::open(&data_dir).map_err(|e| {
            EngineError::statement(StatusCode::IoError, format!("masking key: {e}"))
        })?;

        let mut runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(StoreRegistry::new(config.s3.clone())));
        if config.engine.memory_limit_mb > 0 {
            // A fair pool: each spilling operator (the sorts under per-series functions, one
            // per partition) may take an even share, so one cannot take the memory another
            // needs to merge its spill files. Operators that cannot spill (training) get
            // what the spilling ones do not hold.
            use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
            runtime = runtime.with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(config.engine.memory_limit_mb * 1024 * 1024),
                std::num::NonZeroUsize::new(5).expect("5 > 0"),
            )));
        }
        let runtime = runtime.build_arc()?;

        let mut session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(true)
            .with_default_catalog_and_schema(CATALOG_NAME, DEFAULT_SCHEMA)
            .with_batch_size(config.engine.batch_size.max(1))
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            .set_str("datafusion.execution.time_zone", "UTC")
            // Scans report row counts (exact for tables served from memory, estimated after
            // filters); a plan whose estimate fits one batch (a keyed lookup) gains nothing
            // from a round-robin repartition, which costs a task and a channel per execution.
            .set_bool(
                "datafusion.execution.use_row_number_estimates_to_optimize_partitioning",
                true,
            );
        if config.engine.target_partitions > 0 {
            session_config = session_config.with_target_partitions(config.engine.target_partitions);
        }
        if config.engine.memory_limit_mb > 0 {
            // Each sort that spills keeps this much back to merge its spill files (10 MB by
            // default); with one sort per partition a small pool would go to those reserves
            // alone, so they get at most a quarter of a partition's share.
            let share = config.engine.memory_limit_mb * 1024 * 1024
                / (4 * session_config.target_partitions().max(1));
            let options = session_config.options_mut();
            options.execution.sort_spill_reservation_bytes =
                options.execution.sort_spill_reservation_bytes.min(share);
        }
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rules(
                prognos_udfs::series_plan::SeriesAggregation::with_default_rules(),
            )
            .with_relation_planners(vec![Arc::new(prognos_udfs::relations::ModelRelations)])
            .with_analyzer_rule(Arc::new(prognos_udfs::prediction_log::LogPredictions))
            .build();
        let ctx = SessionContext::new_with_state(state);
        prognos_udfs::register_all(&ctx)?;
        prognos_udfs::value_limits::bound_value_builders(
            &ctx,
            config
                .engine
                .max_value_mb
                .max(1)
                .saturating_mul(1024 * 1024),
        );
        datafusion_pg_catalog::setup_pg_catalog(&ctx, CATALOG_NAME, EmptyContextProvider)
            .map_err(|e| EngineError::DataFusion(*e))?;
        for udf in prognos_udfs::pg_compat::catalog_overrides() {
            ctx.register_udf(udf);
        }
        ctx.register_udf(pg_compat::role_tables::user_by_id(
            Arc::clone(&roles),
            config.bootstrap.name.clone(),
        ));
        if let Some(cat) = ctx.catalog(CATALOG_NAME)
            && let Some(pg) = cat.schema("pg_catalog")
        {
            cat.register_schema(
                "pg_catalog",
                Arc::new(pg_compat::catalog_tables::PgCatalogSchema::new(pg)),
            )?;
        }

        let artifacts = ArtifactStores {
            base_url: config
                .storage
                .models_url
                .as_ref()
                .or(config.storage.tables_url.as_ref())
                .map(|u| u.trim_end_matches('/').to_string()),
            stores: Arc::clone(&ctx.runtime_env().object_store_registry),
            max_mb: config.models.max_artifact_mb,
        };
        if let Some(library) = &config.models.onnx_library {
            prognos_models::onnx::runtime::set_library_path(library);
        }
        let registry = Arc::new(ModelRegistry::open(&data_dir, artifacts).await?);
        let system = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
        for t in SystemTable::all() {
            datafusion::catalog::SchemaProvider::register_table(
                system.as_ref(),
                t.name().to_string(),
                Arc::new(RegistryTable::new(Arc::clone(&registry), t)),
            )?;
        }
        datafusion::catalog::SchemaProvider::register_table(
            system.as_ref(),
            audit_table::AUDIT_TABLE.to_string(),
            audit_table::audit_table(&data_dir)?,
        )?;
        datafusion::catalog::SchemaProvider::register_table(
            system.as_ref(),
            policy_table::POLICY_TABLE.to_string(),
            Arc::new(policy_table::PolicyTable::new(Arc::clone(&roles))),
        )?;
        if let Some(cat) = ctx.catalog(CATALOG_NAME) {
            cat.register_schema(SYSTEM_SCHEMA, Arc::clone(&system) as _)?;
        }
        // Up to this many sampled batches wait for the writer; beyond, rows are dropped.
        let (prediction_log, log_rows) = prognos_udfs::prediction_log::LogSink::new(1024);
        prognos_udfs::register_model_functions(
            &ctx,
            registry.snapshot(),
            None,
            Some(prediction_log.clone()),
            None,
        );

        let base = ctx.state();
        // Names in `FROM f(...)` that are not scalar functions in Postgres' sense: the table
        // functions and the relation forms of the model functions.
        let table_functions = base
            .table_functions()
            .keys()
            .cloned()
            .chain(
                prognos_udfs::relations::RELATION_FUNCTIONS
                    .iter()
                    .map(|f| f.to_string()),
            )
            .collect();
        let aggregate_functions = base
            .aggregate_functions()
            .values()
            .flat_map(|f| std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()))
            .map(|n| n.to_lowercase())
            .collect();
        let jobs = model_jobs::Jobs::new(&data_dir.join("models"));
        let engine = Arc::new(Engine {
            base,
            table_functions,
            aggregate_functions,
            ddl_epoch: std::sync::atomic::AtomicU64::new(0),
            catalog,
            data_dir,
            local: Arc::new(DurableLocalStore::new()),
            tables_url: config
                .storage
                .tables_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            pg_compat: pg_compat::PgCompat::new(),
            ddl_lock: tokio::sync::Mutex::new(()),
            registry,
            models_config: config.models.clone(),
            roles,
            bootstrap_superuser: config.bootstrap.name.clone(),
            files,
            session_defaults: Arc::new(
                DEFAULT_PG_SETTINGS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .chain([(
                        "statement_timeout".to_string(),
                        config.engine.statement_timeout_ms.to_string(),
                    )])
                    .collect(),
            ),
            masking_key,
            audit,
            max_result_bytes: config.engine.max_result_mb.saturating_mul(1024 * 1024),
            session_memory_bytes: config.engine.query_memory_mb.saturating_mul(1024 * 1024),
            pg_static: Arc::new(
                datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables::try_new()
                    .map_err(EngineError::DataFusion)?,
            ),
            jobs,
            prediction_log,
            alerts: model_rules::Alerts::default(),
        });
        prediction_writer::start(&engine, log_rows);
        datafusion::catalog::SchemaProvider::register_table(
            system.as_ref(),
            model_jobs::JOBS_TABLE.to_string(),
            Arc::new(model_jobs::JobsTable::new(Arc::downgrade(&engine))),
        )?;
        engine.bootstrap_roles(&config.bootstrap)?;
        transaction::commit::recover(&engine).await?;
        engine.restore().await;
        orphans::sweep(&engine).await;
        if config.demo_data && engine.catalog.is_empty() {
            demo::load(&engine).await?;
        }
        model_jobs::start_scheduler(&engine, std::time::Duration::from_secs(1));
        audit_log::start_syncer(&engine);
        Ok(engine)
    }

    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A new session for one client connection (it runs as the bootstrap superuser until a
    /// frontend binds it to the role it authenticated: [`Session::set_user`]).
    pub fn new_session(&self) -> Session {
        use transaction::overlay::{SessionCatalogList, SessionView};
        let txn = Arc::new(transaction::TxnSlot::default());
        let user: session::User = Arc::new(std::sync::Mutex::new(self.bootstrap_superuser.clone()));
        let role =
            prognos_catalog::grants::SessionRole::new(Arc::clone(&self.roles), Arc::clone(&user));
        let shared = Arc::clone(self.base.catalog_list());
        let mut view = SessionView {
            txn: Arc::clone(&txn),
            role: role.clone(),
            pg_catalog: None,
            masking_key: self.masking_key.clone(),
        };
        // The session's pg_catalog lists what its role sees: it reads a view without a
        // pg_catalog of its own (no cycle), and keeps its oids for the session's lifetime.
        let listed: Arc<dyn datafusion::catalog::CatalogProviderList> =
            Arc::new(SessionCatalogList::new(Arc::clone(&shared), view.clone()));
        if let Ok(pg) = datafusion_pg_catalog::pg_catalog::PgCatalogSchemaProvider::try_new(
            listed,
            Arc::clone(&self.pg_static),
            EmptyContextProvider,
        ) {
            view.pg_catalog = Some(Arc::new(
                pg_compat::catalog_tables::PgCatalogSchema::new(Arc::new(pg))
                    .with_roles(Arc::clone(&self.roles), &self.bootstrap_superuser),
            ));
        }
        let config = self.base.config().clone().with_extension(Arc::new(role));
        let mut builder = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_config(config)
            .with_catalog_list(Arc::new(SessionCatalogList::new(shared, view)));
        if self.session_memory_bytes > 0 {
            let runtime = self.base.runtime_env();
            let share = session_memory::SessionPool::new(
                Arc::clone(&runtime.memory_pool),
                self.session_memory_bytes,
            );
            if let Ok(runtime) = RuntimeEnvBuilder::from_runtime_env(runtime)
                .with_memory_pool(Arc::new(share))
                .build_arc()
            {
                builder = builder.with_runtime_env(runtime);
            }
        }
        let state = builder.build();
        Session::new(
            SessionContext::new_with_state(state),
            txn,
            user,
            true,
            Arc::clone(&self.session_defaults),
        )
    }

    /// Parse SQL text into statements ([`parser`]: once, with one parser), then apply the
    /// engine's rewrites to each: Postgres client compatibility ([`pg_compat`], decided by the
    /// relations a statement reads) and Postgres' functions in `FROM`.
    ///
    /// Text the parser refuses may still be a known client query that datafusion-pg-catalog
    /// replaces wholesale (see [`pg_compat::PgCompat::rescue`]); otherwise the parser's
    /// syntax error stands.
    pub fn parse(&self, sql: &str) -> EngineResult<Vec<Statement>> {
        self.parse_with(sql, parser::ParseOptions::default())
    }

    /// [`Engine::parse`] with parser options (`?` placeholders for Flight SQL).
    pub fn parse_with(
        &self,
        sql: &str,
        options: parser::ParseOptions,
    ) -> EngineResult<Vec<Statement>> {
        let parsed = match parser::parse_with(sql, options) {
            Ok(parsed) => parsed,
            Err(e) if e.status() == StatusCode::SyntaxError => {
                return match self.pg_compat.rescue(sql) {
                    Some(stmts) => Ok(stmts
                        .into_iter()
                        .map(|s| Statement::Sql(DFStatement::Statement(Box::new(s))))
                        .collect()),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        Ok(parsed
            .into_iter()
            .map(|p| match p.statement {
                parser::Parsed::Model(m) => Statement::Model(m),
                parser::Parsed::Role(r) => Statement::Role(r),
                parser::Parsed::Backup(folder) => Statement::Backup(folder),
                parser::Parsed::Sql(DFStatement::Statement(s)) => {
                    let s = self.pg_compat.rewrite(*s, &p.text);
                    Statement::Sql(self.prepare_user_statement(DFStatement::Statement(Box::new(s))))
                }
                parser::Parsed::Sql(s) => Statement::Sql(self.prepare_user_statement(s)),
            })
            .collect())
    }

    /// Postgres' functions in `FROM` and result column names ([`pg_compat::syntax`]), in a
    /// statement or the statement an `EXPLAIN` holds. (The relation forms of the model
    /// functions, `PREDICT('m', TABLE t)` & co., are planned from the tree by
    /// `prognos_udfs::relations`.)
    pub(crate) fn prepare_user_statement(&self, mut stmt: DFStatement) -> DFStatement {
        let inner = match &mut stmt {
            DFStatement::Explain(e) => e.statement.as_mut(),
            other => other,
        };
        if let DFStatement::Statement(s) = inner {
            pg_compat::functions::rewrite_catalog_functions(s);
            pg_compat::syntax::rewrite_from_functions(s, &self.table_functions);
            pg_compat::subqueries::single_row_subqueries(s, &self.aggregate_functions);
        }
        stmt
    }

    /// Parameter types and result schema of a statement, without running it.
    pub async fn describe(&self, session: &Session, stmt: &Statement) -> EngineResult<Described> {
        self.sync_models(session, stmt).await;
        guard_block(session, stmt)?;
        let out = contain_panics(async {
            match stmt {
                Statement::Sql(s) => statements::describe(self, session, s).await,
                Statement::Model(m) => Ok(Described {
                    params: vec![],
                    schema: model_ddl::result_schema(self, session, m).await?,
                    plan: None,
                }),
                Statement::Role(_) | Statement::Backup(_) => Ok(Described {
                    params: vec![],
                    schema: None,
                    plan: None,
                }),
            }
        })
        .await;
        fail_block_on_error(session, out)
    }

    /// Make the session's model functions see the registry as it is now (a plan made after
    /// this keeps that view for its whole run), and load the models `stmt` names that are
    /// not in memory yet, so planning and execution never wait on the artifact store.
    async fn sync_models(&self, session: &Session, stmt: &Statement) {
        let generation = self.registry.generation();
        let snapshot = self.registry.snapshot();
        let device = session.device();
        let user = session.user();
        let key = (generation, self.roles.generation(), user.clone(), device);
        if session.model_functions().as_ref() != Some(&key) {
            // A role sees the models it may use; the others answer 42501.
            let privileges = self.roles.privileges(&user);
            let visible = if privileges.is_superuser() {
                Arc::clone(&snapshot)
            } else {
                Arc::new(snapshot.restricted(|m| {
                    privileges.has(
                        &prognos_catalog::Securable::Model(m.to_string()),
                        prognos_catalog::Privilege::Usage,
                    )
                }))
            };
            prognos_udfs::register_model_functions(
                session.ctx(),
                visible,
                device,
                Some(self.prediction_log.clone()),
                Some(prognos_udfs::models::Notes::new(session.note_sink())),
            );
            session.set_model_functions(key);
        }
        // Once every model is in memory, statements are not searched for names.
        if snapshot.has_unloaded() {
            let names = model_refs::candidates(stmt);
            snapshot.preload(names.iter().map(String::as_str)).await;
        }
    }

    /// Start the statement's list of what it touches ([`Session::touched`]) with the models it
    /// names.
    /// Nothing is noted while the audit log is off (its only reader).
    fn note_models(&self, session: &Session, stmt: &Statement) {
        session.clear_touched();
        if !self.audits() {
            return;
        }
        if let Some(name) = stmt.model_name() {
            session.touch(None, Some(name.to_string()));
            return;
        }
        for name in model_refs::candidates(stmt) {
            if self.registry.contains(&name) {
                session.touch(None, Some(name));
            }
        }
    }

    /// Run one statement with optional values for `$1..$n`.
    pub async fn execute(
        &self,
        session: &Session,
        stmt: &Statement,
        params: Option<Vec<ScalarValue>>,
    ) -> EngineResult<Output> {
        self.note_models(session, stmt);
        self.sync_models(session, stmt).await;
        guard_block(session, stmt)?;
        let out = contain_panics(async {
            match stmt {
                Statement::Sql(s) => statements::execute(self, session, s, params).await,
                Statement::Model(m) => model_ddl::execute(self, session, m).await,
                Statement::Role(r) => self.execute_role(session, r).await,
                Statement::Backup(folder) => backup::execute(self, session, folder).await,
            }
        })
        .await;
        fail_block_on_error(session, out).map(|o| self.bound_result(o))
    }

    /// Run a statement prepared with [`Engine::describe`], reusing its plan when still valid.
    pub async fn execute_prepared(
        &self,
        session: &Session,
        stmt: &Statement,
        described: &Described,
        params: Option<Vec<ScalarValue>>,
    ) -> EngineResult<Output> {
        self.note_models(session, stmt);
        self.sync_models(session, stmt).await;
        guard_block(session, stmt)?;
        let out = contain_panics(async {
            let stmt = match stmt {
                Statement::Sql(s) => s,
                Statement::Model(m) => return model_ddl::execute(self, session, m).await,
                Statement::Role(r) => return self.execute_role(session, r).await,
                Statement::Backup(folder) => {
                    return backup::execute(self, session, folder).await;
                }
            };
            // A plan holds the table providers it resolved; inside a transaction block they
            // must be the block's view of the tables, so such plans are made afresh.
            let Some(slot) = described
                .plan
                .as_ref()
                .filter(|_| !session.in_transaction())
            else {
                return statements::execute(self, session, stmt, params).await;
            };
            let mut cached = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if cached.epoch != self.epoch() {
                // Names resolve differently now (DDL, a new model version): plan again, and
                // keep the new plan for the next executions while the statement still has
                // the parameters and result columns it was described with.
                let fresh = statements::describe(self, session, stmt).await?;
                let same_shape =
                    fresh.params == described.params && fresh.schema == described.schema;
                match fresh.plan {
                    Some(new) if same_shape => {
                        cached = new.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = cached.clone();
                    }
                    _ => return statements::execute(self, session, stmt, params).await,
                }
            }
            statements::execute_with_plan(
                self,
                session,
                stmt,
                cached.plan.clone(),
                params,
                Some((&cached, &described.params)),
            )
            .await
        })
        .await;
        fail_block_on_error(session, out).map(|o| self.bound_result(o))
    }

    /// A result set bounded by `engine.max_result_mb`.
    fn bound_result(&self, out: Output) -> Output {
        if self.max_result_bytes == 0 {
            return out;
        }
        match out {
            Output::Rows(s) => Output::Rows(streams::bounded(s, self.max_result_bytes)),
            Output::CopyOut { stream, format } => Output::CopyOut {
                stream: streams::bounded(stream, self.max_result_bytes),
                format,
            },
            other => other,
        }
    }

    fn epoch(&self) -> u64 {
        self.ddl_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// **The one invalidation rule for cached plans.** Every statement that changes what a
    /// name resolves to — table / view / external-table DDL, `CREATE [OR REPLACE] MODEL`,
    /// `DROP MODEL` (and, as they arrive, model deploy / rollback and grants) — calls this
    /// once it has taken effect. A plan made in an earlier epoch (a pgwire prepared statement,
    /// a Flight SQL ticket or prepared statement: [`Described`]'s plan) is planned again from
    /// its statement tree before it runs; plans of the current epoch are reused.
    pub(crate) fn bump_epoch(&self) {
        self.ddl_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Re-create every table of the persistent catalog. A table that cannot be restored (an
    /// unreachable bucket, a deleted file) is logged and skipped; its entry stays in the catalog.
    async fn restore(&self) {
        let session = self.new_session();
        // Tables first, then views — a view may read any table, or another view: views are
        // retried while each pass restores at least one.
        let (mut views, tables): (Vec<_>, Vec<_>) = self
            .catalog
            .entries()
            .into_iter()
            .partition(|e| matches!(e.kind, prognos_catalog::TableKind::View { .. }));
        let mut failed = vec![];
        for entry in tables {
            if let Err(e) = statements::restore_entry(self, &session, &entry).await {
                failed.push((entry, e));
            }
        }
        loop {
            let before = views.len();
            let mut waiting = vec![];
            let mut errors = vec![];
            for entry in std::mem::take(&mut views) {
                if let Err(e) = statements::restore_entry(self, &session, &entry).await {
                    waiting.push(entry.clone());
                    errors.push((entry, e));
                }
            }
            if waiting.is_empty() {
                break;
            }
            if waiting.len() == before {
                failed.extend(errors);
                break;
            }
            views = waiting;
        }
        for (entry, e) in failed {
            warn!(table = %format!("{}.{}", entry.schema, entry.name), error = %e, "could not restore table");
        }
        info!(tables = self.catalog.entries().len(), "catalog restored");
    }
}

/// In a failed transaction block only ROLLBACK (or COMMIT, or ROLLBACK TO SAVEPOINT) runs.
fn guard_block(session: &Session, stmt: &Statement) -> EngineResult<()> {
    if session.txn().failed()
        && !matches!(stmt, Statement::Sql(s) if statements::ends_failed_block(s))
    {
        return Err(transaction::in_failed_block());
    }
    Ok(())
}

/// A statement that fails inside a transaction block fails the block.
fn fail_block_on_error<T>(session: &Session, out: EngineResult<T>) -> EngineResult<T> {
    if out.is_err() {
        session.txn().fail();
    }
    out
}

/// Runs a statement's planning and start, turning a panic inside it (a bug in a function, a
/// table provider or a dependency) into an internal error (XX000) for that statement, so the
/// connection and the server stay up.
async fn contain_panics<T>(
    fut: impl std::future::Future<Output = EngineResult<T>>,
) -> EngineResult<T> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %msg, "statement panicked");
            Err(EngineError::statement(
                StatusCode::Internal,
                format!("internal error while running the statement: {msg}"),
            ))
        }
    }
}
