//! Statement dispatch: Postgres session commands, persistent DDL, managed tables, and
//! everything else handed to DataFusion.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::logical_expr::expr::{Cast, Placeholder, TryCast};
use datafusion::logical_expr::{
    CreateExternalTable, CreateMemoryTable, DdlStatement, DmlStatement, Expr, LogicalPlan, WriteOp,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::{ResetStatement, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    CopyLegacyOption, CopyOption, CopySource, CopyTarget, Expr as SqlExpr, Set,
    Statement as SqlStatement, Value as SqlValue,
};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use prognos_catalog::{ManagedTable, Privilege, Securable, TableEntry, TableKind};
use prognos_models::onnx::device::{self, DeviceRequest};
use prognos_storage::manifest::TableStore;

use super::{CATALOG_NAME, CachedPlan, DEFAULT_SCHEMA, Described, Engine, Output, Session};
use crate::error::{EngineError, EngineResult, StatusCode};
use crate::server_files::Access;
use crate::session::DEVICE_SETTING;
use crate::transaction::Change;

/// Session commands handled without DataFusion.
enum SessionCommand {
    Set(Vec<(String, String)>),
    Show(String),
    ShowAll,
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    Discard,
    Reset(Option<String>),
    Noop(&'static str),
}

fn value_text(e: &SqlExpr) -> String {
    match e {
        SqlExpr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s)
            | SqlValue::DoubleQuotedString(s)
            | SqlValue::EscapedStringLiteral(s) => s.clone(),
            SqlValue::Number(n, _) => n.clone(),
            SqlValue::Boolean(b) => {
                if *b {
                    "on".into()
                } else {
                    "off".into()
                }
            }
            other => other.to_string(),
        },
        SqlExpr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn normalise_setting_name(parts: &[String]) -> String {
    let joined = parts.join(" ").to_ascii_lowercase();
    match joined.as_str() {
        "time zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        "session authorization" => "session_authorization".into(),
        // Any other name of several parts was dotted: `SHOW prognos.device`.
        _ => parts.join(".").to_ascii_lowercase(),
    }
}

fn session_command(stmt: &DFStatement) -> Option<SessionCommand> {
    let s = match stmt {
        DFStatement::Statement(s) => s,
        // DataFusion's parser reads every `RESET` (sqlparser's own RESET never reaches here);
        // its own settings stay its own.
        DFStatement::Reset(ResetStatement::Variable(name)) => {
            let parts: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
            let name = normalise_setting_name(&parts);
            return match name.as_str() {
                n if n.starts_with("datafusion.") => None,
                "all" => Some(SessionCommand::Reset(None)),
                _ => Some(SessionCommand::Reset(Some(name))),
            };
        }
        _ => return None,
    };
    Some(match s.as_ref() {
        SqlStatement::Set(set) => match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_ascii_lowercase();
                if name.starts_with("datafusion.") {
                    return None;
                }
                let value = values.iter().map(value_text).collect::<Vec<_>>().join(", ");
                let name = if name == "time_zone" {
                    "timezone".into()
                } else {
                    name
                };
                SessionCommand::Set(vec![(name, value)])
            }
            Set::MultipleAssignments { assignments } => SessionCommand::Set(
                assignments
                    .iter()
                    .map(|a| {
                        (
                            a.name.to_string().to_ascii_lowercase(),
                            value_text(&a.value),
                        )
                    })
                    .collect(),
            ),
            Set::SetTimeZone { value, .. } => {
                SessionCommand::Set(vec![("timezone".into(), value_text(value))])
            }
            Set::SetNames { charset_name, .. } => {
                SessionCommand::Set(vec![("client_encoding".into(), charset_name.value.clone())])
            }
            _ => SessionCommand::Noop("SET"),
        },
        SqlStatement::ShowVariable { variable } => {
            let parts: Vec<String> = variable.iter().map(|i| i.value.clone()).collect();
            let name = normalise_setting_name(&parts);
            if name == "all" {
                SessionCommand::ShowAll
            } else if name.starts_with("datafusion.") {
                return None;
            } else {
                SessionCommand::Show(name)
            }
        }
        SqlStatement::StartTransaction { .. } => SessionCommand::Begin,
        SqlStatement::Commit { .. } => SessionCommand::Commit,
        SqlStatement::Rollback {
            savepoint: Some(name),
            ..
        } => SessionCommand::RollbackTo(savepoint_name(name)),
        SqlStatement::Rollback { .. } => SessionCommand::Rollback,
        SqlStatement::Savepoint { name } => SessionCommand::Savepoint(savepoint_name(name)),
        SqlStatement::ReleaseSavepoint { name } => SessionCommand::Release(savepoint_name(name)),
        SqlStatement::Discard { .. } => SessionCommand::Discard,
        SqlStatement::Deallocate { .. } => SessionCommand::Noop("DEALLOCATE"),
        SqlStatement::LISTEN { .. } => SessionCommand::Noop("LISTEN"),
        SqlStatement::UNLISTEN { .. } => SessionCommand::Noop("UNLISTEN"),
        _ => return None,
    })
}

/// A savepoint's name as PostgreSQL folds it (unquoted names to lower case).
fn savepoint_name(name: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match name.quote_style {
        Some(_) => name.value.clone(),
        None => name.value.to_lowercase(),
    }
}

/// Whether `stmt` ends a transaction block or rolls back to a savepoint: the statements a
/// failed block still accepts.
pub(super) fn ends_failed_block(stmt: &DFStatement) -> bool {
    matches!(
        session_command(stmt),
        Some(SessionCommand::Commit | SessionCommand::Rollback | SessionCommand::RollbackTo(_))
    )
}

fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]))
}

fn one_batch(schema: SchemaRef, batch: RecordBatch) -> Output {
    let stream = futures::stream::iter(vec![Ok(batch)]);
    Output::Rows(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

async fn run_session_command(
    engine: &Engine,
    session: &Session,
    cmd: SessionCommand,
) -> EngineResult<Output> {
    let txn = session.txn();
    Ok(match cmd {
        SessionCommand::Set(pairs) => {
            for (name, value) in pairs {
                if crate::session::ROLE_SETTINGS.contains(&name.as_str()) {
                    return Err(EngineError::statement(
                        StatusCode::ReadOnlyParameter,
                        format!("parameter \"{name}\" cannot be changed"),
                    ));
                }
                if name == "timezone" {
                    session.set_time_zone(&value)?;
                }
                if name == "statement_timeout" {
                    crate::session::parse_timeout(&value).map_err(|m| {
                        EngineError::statement(StatusCode::InvalidParameterValue, m)
                    })?;
                }
                if name == DEVICE_SETTING {
                    // `DEFAULT` or '' (what SHOW gives by default): each model's own again.
                    if value.eq_ignore_ascii_case("default") || value.trim().is_empty() {
                        session.reset_setting(&name);
                        continue;
                    }
                    let request = DeviceRequest::parse(&value).map_err(|e| {
                        EngineError::statement(
                            StatusCode::InvalidParameterValue,
                            format!("invalid value for parameter \"{DEVICE_SETTING}\": {e}"),
                        )
                    })?;
                    if let Some(why) = device::fallback_reason(request) {
                        session.notice(format!("{why}; models run on the CPU"));
                    }
                }
                session.set_setting(&name, &value);
            }
            Output::Command {
                tag: "SET".into(),
                rows: None,
            }
        }
        SessionCommand::Show(name) => {
            let value = session.setting(&name).ok_or_else(|| {
                EngineError::statement(
                    StatusCode::InvalidParameterValue,
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })?;
            let schema = show_schema(&name);
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringArray::from(vec![value]))],
            )?;
            one_batch(schema, batch)
        }
        SessionCommand::ShowAll => {
            let all = session.settings();
            let schema = Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("setting", DataType::Utf8, true),
            ]));
            let names: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
            let values: Vec<&str> = all.iter().map(|(_, v)| v.as_str()).collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(values)),
                ],
            )?;
            one_batch(schema, batch)
        }
        SessionCommand::Begin => {
            if !txn.begin() {
                session.notice("WARNING: there is already a transaction in progress".into());
            }
            Output::TransactionStart("BEGIN".into())
        }
        SessionCommand::Commit => match txn.take() {
            None => {
                session.notice("WARNING: there is no transaction in progress".into());
                Output::TransactionEnd("COMMIT".into())
            }
            Some(block) if block.is_failed() => {
                crate::transaction::commit::discard(block.into_changes()).await;
                Output::TransactionEnd("ROLLBACK".into())
            }
            Some(block) => {
                crate::transaction::commit::commit(engine, block).await?;
                Output::TransactionEnd("COMMIT".into())
            }
        },
        SessionCommand::Rollback => {
            match txn.take() {
                None => session.notice("WARNING: there is no transaction in progress".into()),
                Some(block) => crate::transaction::commit::discard(block.into_changes()).await,
            }
            Output::TransactionEnd("ROLLBACK".into())
        }
        SessionCommand::Savepoint(name) => {
            txn.savepoint(&name)?;
            command("SAVEPOINT")
        }
        SessionCommand::Release(name) => {
            txn.release(&name)?;
            command("RELEASE")
        }
        SessionCommand::RollbackTo(name) => {
            let undone = txn.rollback_to(&name)?;
            crate::transaction::commit::discard(undone).await;
            command("ROLLBACK")
        }
        SessionCommand::Discard => {
            session.reset_settings();
            Output::Command {
                tag: "DISCARD ALL".into(),
                rows: None,
            }
        }
        SessionCommand::Reset(name) => {
            match name {
                None => session.reset_settings(),
                Some(n) => session.reset_setting(&n),
            }
            Output::Command {
                tag: "RESET".into(),
                rows: None,
            }
        }
        SessionCommand::Noop(tag) => Output::Command {
            tag: tag.into(),
            rows: None,
        },
    })
}

/// Parameter types and result schema of a statement.
pub(super) async fn describe(
    engine: &Engine,
    session: &Session,
    stmt: &DFStatement,
) -> EngineResult<Described> {
    if let Some(cmd) = session_command(stmt) {
        let schema = match cmd {
            SessionCommand::Show(name) => Some(show_schema(&name)),
            SessionCommand::ShowAll => Some(Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("setting", DataType::Utf8, true),
            ]))),
            _ => None,
        };
        return Ok(Described {
            params: vec![],
            schema,
            plan: None,
        });
    }
    if let DFStatement::Statement(s) = stmt
        && (matches!(s.as_ref(), SqlStatement::Copy { .. })
            || matches!(s.as_ref(), SqlStatement::AlterTable(a)
                if crate::rename::rename_target(a).is_some()
                    || crate::owner_sql::owner_target(a).is_some()))
    {
        return Ok(Described {
            params: vec![],
            schema: None,
            plan: None,
        });
    }
    let epoch = engine.epoch();
    let plan = session
        .ctx()
        .state()
        .statement_to_plan(
            crate::model_monitoring::with_monitor_relations(
                engine,
                &crate::insert_values::nested_values_planned_alone(stmt),
            )
            .into_owned(),
        )
        .await?;
    let params = parameter_types(&plan)?;
    if !returns_rows(&plan) {
        return Ok(Described {
            params,
            schema: None,
            plan: None,
        });
    }
    let schema = Some(Arc::clone(plan.schema().inner()));
    // A plain query is kept optimized (its parameters still placeholders), so each execution
    // binds the values and goes straight to physical planning. Queries the run path treats
    // apart (EXPLAIN, ad-hoc FORECAST) and plans the optimizer cannot take unbound keep the
    // unoptimized plan.
    let optimized = if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_))
        || forecasts_series(&plan)
        || !only_immutable_functions(&plan)
        || limit_takes_parameter(&plan)
    {
        None
    } else {
        session.ctx().state().optimize(&plan).ok()
    };
    let plan = match optimized {
        Some(p) => CachedPlan {
            plan: p,
            epoch,
            optimized: true,
            template: Default::default(),
        },
        None => CachedPlan {
            plan,
            epoch,
            optimized: false,
            template: Default::default(),
        },
    };
    Ok(Described {
        params,
        schema,
        plan: Some(Arc::new(std::sync::Mutex::new(plan))),
    })
}

fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
    )
}

/// Whether every scalar function of `plan` is immutable: the optimizer folds a stable one
/// (`now()`) into a constant, which must not outlive the execution it was folded for.
fn only_immutable_functions(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Volatility;
    let mut immutable = true;
    // The closures never fail.
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    immutable = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    immutable
}

/// Whether a `LIMIT` / `OFFSET` of `plan` is a parameter: the physical planner takes only a
/// number there, which the optimizer makes of the bound value, so such a plan is optimized
/// per execution.
fn limit_takes_parameter(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = false;
    // The closures never fail.
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Limit(limit) = node {
            for e in limit.skip.iter().chain(limit.fetch.iter()) {
                let _ = e.apply(|e| {
                    found |= matches!(e, Expr::Placeholder(_));
                    Ok(TreeNodeRecursion::Continue)
                });
            }
        }
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// `$1..$n` types in order; gaps are `None`. A parameter DataFusion leaves untyped takes the
/// type it is cast to (`CAST($1 AS DOUBLE)`, `$1::int`), as in Postgres.
fn parameter_types(plan: &LogicalPlan) -> EngineResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types()?;
    let cast = cast_parameter_types(plan);
    let mut indexed: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(k, v)| {
            let v = v.or_else(|| cast.get(&k).cloned());
            k.strip_prefix('$')?.parse::<usize>().ok().map(|i| (i, v))
        })
        .collect();
    indexed.sort_by_key(|(i, _)| *i);
    let n = indexed.last().map(|(i, _)| *i).unwrap_or(0);
    let mut out = vec![None; n];
    for (i, t) in indexed {
        if i >= 1 {
            out[i - 1] = t;
        }
    }
    Ok(out)
}

/// The types untyped parameters are cast to in `plan` (the first cast of each).
fn cast_parameter_types(plan: &LogicalPlan) -> HashMap<String, DataType> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut out = HashMap::new();
    // The closures never fail.
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                    && let Expr::Placeholder(Placeholder { id, field: None }) = expr.as_ref()
                {
                    out.entry(id.clone())
                        .or_insert_with(|| field.data_type().clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    out
}

/// Postgres-style COPY to the client or from the client.
async fn pg_copy(
    engine: &Engine,
    session: &Session,
    source: &CopySource,
    to: bool,
    target: &CopyTarget,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> EngineResult<Output> {
    let format = super::copy::copy_format(options, legacy)?;
    if !to {
        let t = super::copy::copy_in_target(session, source, target, format).await?;
        crate::privileges::require_table(engine, session, &t.table, Privilege::Insert)?;
        return Ok(Output::CopyIn(t));
    }
    if !matches!(target, CopyTarget::Stdout) {
        return Err(EngineError::statement(
            StatusCode::FeatureNotSupported,
            "COPY TO supports STDOUT or a quoted path: COPY t TO 'path' (FORMAT parquet|csv)",
        ));
    }
    let query = match source {
        CopySource::Query(q) => SqlStatement::Query(q.clone()),
        CopySource::Table {
            table_name,
            columns,
        } => {
            // `SELECT * FROM t`, or the listed columns, as a tree.
            let mut query =
                crate::parser::dialect::select_all_from(table_name.clone()).map_err(|e| {
                    EngineError::DataFusion(datafusion::error::DataFusionError::SQL(
                        Box::new(e),
                        None,
                    ))
                })?;
            if !columns.is_empty()
                && let datafusion::sql::sqlparser::ast::SetExpr::Select(select) =
                    query.body.as_mut()
            {
                select.projection = columns
                    .iter()
                    .map(|c| {
                        datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(
                            datafusion::sql::sqlparser::ast::Expr::Identifier(c.clone()),
                        )
                    })
                    .collect();
            }
            SqlStatement::Query(Box::new(query))
        }
    };
    let plan = session
        .ctx()
        .state()
        .statement_to_plan(DFStatement::Statement(Box::new(query)))
        .await?;
    crate::privileges::check_plan(engine, session, &plan)?;
    let df = session.ctx().execute_logical_plan(plan).await?;
    Ok(Output::CopyOut {
        stream: df.execute_stream().await?,
        format,
    })
}

/// Run one statement.
pub(super) async fn execute(
    engine: &Engine,
    session: &Session,
    stmt: &DFStatement,
    params: Option<Vec<ScalarValue>>,
) -> EngineResult<Output> {
    if let Some(cmd) = session_command(stmt) {
        return run_session_command(engine, session, cmd).await;
    }
    if let DFStatement::Statement(s) = stmt
        && let SqlStatement::AlterTable(alter) = s.as_ref()
        && crate::rename::rename_target(alter).is_some()
    {
        return crate::rename::rename(engine, session, alter).await;
    }
    if let DFStatement::Statement(s) = stmt
        && let SqlStatement::AlterTable(alter) = s.as_ref()
        && crate::owner_sql::owner_target(alter).is_some()
    {
        not_transactional(session, "ALTER TABLE … OWNER TO");
        return crate::owner_sql::alter_table_owner(engine, session, alter).await;
    }
    if let DFStatement::Statement(s) = stmt
        && let SqlStatement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } = s.as_ref()
    {
        return pg_copy(
            engine,
            session,
            source,
            *to,
            target,
            options,
            legacy_options,
        )
        .await;
    }
    let plan = session
        .ctx()
        .state()
        .statement_to_plan(
            crate::model_monitoring::with_monitor_relations(
                engine,
                &crate::insert_values::nested_values_planned_alone(stmt),
            )
            .into_owned(),
        )
        .await?;
    execute_with_plan(engine, session, stmt, plan, params, None).await
}

/// Bind parameters into a plan of `stmt` and run it.
pub(super) async fn execute_with_plan(
    engine: &Engine,
    session: &Session,
    stmt: &DFStatement,
    mut plan: LogicalPlan,
    params: Option<Vec<ScalarValue>>,
    cached: Option<(&CachedPlan, &[Option<DataType>])>,
) -> EngineResult<Output> {
    // Every execution, cached plans included: a REVOKE applies to the next run.
    crate::privileges::check_plan(engine, session, &plan)?;
    // An optimized plan may have dropped a parameter (`WHERE false AND id = $1`): the
    // statement's parameters are those it was described with.
    let optimized = cached.is_some_and(|(c, _)| c.optimized);
    let expected = match cached {
        Some((_, params)) if optimized => params.to_vec(),
        _ => parameter_types(&plan)?,
    };
    let cached = cached.map(|(c, _)| c);
    match params {
        Some(values) => {
            if values.len() != expected.len() {
                return Err(EngineError::statement(
                    StatusCode::ProtocolViolation,
                    format!(
                        "bind message supplies {} parameters, but prepared statement requires {}",
                        values.len(),
                        expected.len()
                    ),
                ));
            }
            let values = values
                .into_iter()
                .zip(expected.iter())
                .enumerate()
                .map(|(i, (v, t))| match t {
                    // Text bound where the statement wants another type (a parameter the
                    // client declared `text`): invalid input for that type, as in Postgres.
                    Some(t) if &v.data_type() != t => v.cast_to(t).map_err(|e| {
                        let text = matches!(v.data_type(), DataType::Utf8 | DataType::Utf8View);
                        EngineError::statement(
                            if text {
                                StatusCode::InvalidTextRepresentation
                            } else {
                                StatusCode::DatatypeMismatch
                            },
                            format!(
                                "parameter ${}: cannot use {} as {t}: {e}",
                                i + 1,
                                v.data_type()
                            ),
                        )
                    }),
                    _ => Ok(v),
                })
                .collect::<EngineResult<Vec<_>>>()?;
            if let Some(rows) = run_template(session, &plan, cached, &expected, &values).await? {
                return Ok(rows);
            }
            plan = plan.with_param_values(ParamValues::from(values))?;
        }
        None if !expected.is_empty() => {
            return Err(EngineError::statement(
                StatusCode::ProtocolViolation,
                format!(
                    "statement has {} parameters ($1 …) but none were bound",
                    expected.len()
                ),
            ));
        }
        None => {}
    }
    if let Some(batch) = super::point::try_evaluate(session, &plan)? {
        return Ok(one_batch(batch.schema(), batch));
    }
    if optimized {
        // Optimized when it was described: only the physical planner runs per execution.
        let (state, task, _) = session.planning_state();
        let physical = state
            .query_planner()
            .create_physical_plan(&plan, state.as_ref())
            .await?;
        let stream = datafusion::physical_plan::execute_stream(physical, task)?;
        return Ok(Output::Rows(stream));
    }
    execute_plan(engine, session, stmt, plan, true).await
}

/// Run an optimized prepared plan through its physical template (see
/// [`physical_template`](crate::physical_template)) when it has or can get one; `None` when
/// the caller must bind and plan as usual.
async fn run_template(
    session: &Session,
    plan: &LogicalPlan,
    cached: Option<&CachedPlan>,
    params: &[Option<DataType>],
    values: &[ScalarValue],
) -> EngineResult<Option<Output>> {
    use crate::physical_template::{Prepared, prepare, store, unsupported};
    let Some(cached) = cached else {
        return Ok(None);
    };
    if !cached.optimized || !cached.template.worth_trying() {
        return Ok(None);
    }
    let slot = &cached.template;
    let (state, task, state_version) = session.planning_state();
    let template = match slot.valid(state_version) {
        Some(t) => {
            crate::physical_template::count(true);
            t
        }
        None => {
            let (marked, tables) = match prepare(plan, params)? {
                Prepared::Marked(marked, tables) => (marked, tables),
                Prepared::NotYet => return Ok(None),
                Prepared::Never => {
                    unsupported(slot);
                    return Ok(None);
                }
            };
            // A plan the planner rejects with markers (a parameter where DataFusion wants a
            // literal, such as LIMIT $1) runs the usual way, which reports any real error.
            let Ok(physical) = state
                .query_planner()
                .create_physical_plan(&marked, state.as_ref())
                .await
            else {
                unsupported(slot);
                return Ok(None);
            };
            match store(slot, physical, tables, state_version)? {
                Some(t) => {
                    crate::physical_template::count(false);
                    t
                }
                None => return Ok(None),
            }
        }
    };
    let physical = template.bind(values)?;
    let stream = datafusion::physical_plan::execute_stream(physical, task)?;
    Ok(Some(Output::Rows(stream)))
}

async fn execute_plan(
    engine: &Engine,
    session: &Session,
    stmt: &DFStatement,
    plan: LogicalPlan,
    persist: bool,
) -> EngineResult<Output> {
    if matches!(plan, LogicalPlan::Ddl(_)) {
        engine.bump_epoch();
        let out = run_plan(engine, session, stmt, plan, persist).await;
        engine.bump_epoch();
        return out;
    }
    run_plan(engine, session, stmt, plan, persist).await
}

async fn run_plan(
    engine: &Engine,
    session: &Session,
    stmt: &DFStatement,
    plan: LogicalPlan,
    persist: bool,
) -> EngineResult<Output> {
    let ctx = session.ctx();
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) if !c.temporary => {
            create_managed(engine, session, c).await
        }
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(c)) => {
            create_external(engine, session, stmt, *c, persist).await
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(d)) => {
            let (schema, name) = split_name(&d.name)?;
            let _guard = engine.ddl_lock.lock().await;
            let exists = ctx.table_exist(d.name.clone())?;
            if !exists {
                if d.if_exists {
                    return Ok(command("DROP TABLE"));
                }
                return Err(EngineError::statement(
                    StatusCode::UndefinedTable,
                    format!("table \"{name}\" does not exist"),
                ));
            }
            if session.txn().record(Change::Drop {
                schema: schema.clone(),
                name: name.clone(),
            }) {
                return Ok(command("DROP TABLE"));
            }
            let removed = engine.catalog.remove(&schema, &name)?;
            ctx.deregister_table(d.name.clone())?;
            engine.forget_object(&Securable::table(&schema, &name));
            if let Some(TableEntry {
                kind: TableKind::Managed { root },
                ..
            }) = removed
                && let Err(e) = managed_store(engine, &root)?.delete_all().await
            {
                tracing::warn!(error = %e, "dropped table's files could not all be removed");
            }
            Ok(command("DROP TABLE"))
        }
        LogicalPlan::Ddl(DdlStatement::CreateView(v)) => {
            not_transactional(session, "CREATE VIEW");
            let (schema, name) = split_name(&v.name)?;
            let temporary = v.temporary;
            let or_replace = v.or_replace;
            let sql = v.definition.clone().unwrap_or_else(|| stmt.to_string());
            let _guard = engine.ddl_lock.lock().await;
            let existed = ctx.table_exist(v.name.clone())?;
            ctx.execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateView(v)))
                .await?;
            if persist && !temporary {
                record(
                    engine,
                    schema.clone(),
                    name.clone(),
                    TableKind::View { sql },
                    or_replace,
                )?;
                if !existed {
                    engine.record_owner(session, Securable::table(&schema, &name))?;
                }
            }
            Ok(command("CREATE VIEW"))
        }
        LogicalPlan::Ddl(DdlStatement::DropView(d)) => {
            not_transactional(session, "DROP VIEW");
            let (schema, name) = split_name(&d.name)?;
            let _guard = engine.ddl_lock.lock().await;
            ctx.execute_logical_plan(LogicalPlan::Ddl(DdlStatement::DropView(d)))
                .await?;
            engine.catalog.remove(&schema, &name)?;
            engine.forget_object(&Securable::table(&schema, &name));
            Ok(command("DROP VIEW"))
        }
        LogicalPlan::Ddl(ddl) => {
            let tag = match &ddl {
                DdlStatement::CreateCatalogSchema(_) => "CREATE SCHEMA",
                DdlStatement::DropCatalogSchema(_) => "DROP SCHEMA",
                DdlStatement::CreateCatalog(_) => "CREATE DATABASE",
                DdlStatement::CreateIndex(_) => "CREATE INDEX",
                DdlStatement::CreateFunction(_) => "CREATE FUNCTION",
                DdlStatement::DropFunction(_) => "DROP FUNCTION",
                _ => "CREATE TABLE",
            };
            not_transactional(session, tag);
            session.state_changed();
            let df = ctx.execute_logical_plan(LogicalPlan::Ddl(ddl)).await?;
            df.collect().await?;
            Ok(command(tag))
        }
        LogicalPlan::Dml(DmlStatement { ref op, .. }) => {
            let tag = match op {
                WriteOp::Insert(_) => "INSERT",
                WriteOp::Delete => "DELETE",
                WriteOp::Update => "UPDATE",
                WriteOp::Ctas => "SELECT",
                WriteOp::Truncate => "TRUNCATE TABLE",
                _ => "OK",
            };
            let rows = run_for_count(ctx, plan).await?;
            Ok(Output::Command {
                tag: tag.into(),
                rows: Some(rows),
            })
        }
        LogicalPlan::Copy(mut c) => {
            c.output_url = resolve_location(engine, session, &c.output_url, Access::Write)?;
            let rows = run_for_count(ctx, LogicalPlan::Copy(c)).await?;
            Ok(Output::Command {
                tag: "COPY".into(),
                rows: Some(rows),
            })
        }
        LogicalPlan::Statement(ref s) => {
            session.state_changed();
            let tag = match s {
                datafusion::logical_expr::Statement::Prepare(_) => "PREPARE",
                datafusion::logical_expr::Statement::Execute(_) => "EXECUTE",
                datafusion::logical_expr::Statement::Deallocate(_) => "DEALLOCATE",
                datafusion::logical_expr::Statement::SetVariable(_) => "SET",
                datafusion::logical_expr::Statement::ResetVariable(_) => "RESET",
                _ => "OK",
            };
            let df = ctx.execute_logical_plan(plan).await?;
            if tag == "EXECUTE" {
                return Ok(Output::Rows(df.execute_stream().await?));
            }
            df.collect().await?;
            Ok(command(tag))
        }
        other => {
            // Only a client that receives NOTICEs (pgwire) waits for them; Flight SQL streams.
            let eager = forecasts_series(&other) && session.notice_sender().is_some();
            let df = ctx.execute_logical_plan(other).await?;
            if eager {
                return eager_rows(session, df).await;
            }
            Ok(Output::Rows(df.execute_stream().await?))
        }
    }
}

/// Output a query collects before returning its rows (see [`eager_rows`]).
const EAGER_BYTES: usize = 16 * 1024 * 1024;

/// Run an ad-hoc `FORECAST` query, collecting its output before returning it, up to
/// [`EAGER_BYTES`]. FORECAST's series notes are NOTICEs sent while the statement runs; the rows
/// of a stream are sent after the statement has returned, when pgwire can no longer send
/// NOTICEs. A forecast's output (series × horizon rows) is usually small; a larger one is
/// streamed from there on, with a NOTICE saying that later notes go to the server log.
async fn eager_rows(session: &Session, df: DataFrame) -> EngineResult<Output> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut head = vec![];
    let mut bytes = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        bytes += batch.get_array_memory_size();
        head.push(batch);
        if bytes > EAGER_BYTES {
            session.notice(format!(
                "FORECAST: more than {} MiB of output: the rows are streamed from here on, and \
                 later series notes go to the server log",
                EAGER_BYTES >> 20
            ));
            let rows = futures::stream::iter(head.into_iter().map(Ok)).chain(stream);
            return Ok(Output::Rows(Box::pin(RecordBatchStreamAdapter::new(
                schema, rows,
            ))));
        }
    }
    Ok(Output::Rows(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(head.into_iter().map(Ok)),
    ))))
}

/// Whether a plan runs the `prognos_forecast` aggregate (ad-hoc `FORECAST(TABLE ...)`).
fn forecasts_series(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    plan.exists(|p| {
        Ok(
            matches!(p, LogicalPlan::Aggregate(a) if a.aggr_expr.iter().any(|e| {
                let e = match e {
                    datafusion::logical_expr::Expr::Alias(a) => a.expr.as_ref(),
                    e => e,
                };
                matches!(e, datafusion::logical_expr::Expr::AggregateFunction(f)
                    if f.func.name() == prognos_udfs::forecast::NAME)
            })),
        )
    })
    .unwrap_or(false)
}

/// Inside a transaction block, say that `what` takes effect at once (only managed-table
/// writes are transactional; see [`crate::transaction`]).
pub(crate) fn not_transactional(session: &Session, what: &str) {
    if session.in_transaction() {
        session.notice(format!(
            "{what} takes effect at once: it is not part of the transaction block and ROLLBACK \
             does not undo it"
        ));
    }
}

pub(crate) fn command(tag: &str) -> Output {
    Output::Command {
        tag: tag.into(),
        rows: None,
    }
}

/// Run a plan that returns one `count` row (DML, COPY) and return that count.
async fn run_for_count(
    ctx: &datafusion::prelude::SessionContext,
    plan: LogicalPlan,
) -> EngineResult<u64> {
    let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
    let mut total = 0u64;
    for b in batches {
        if b.num_columns() == 0 {
            continue;
        }
        let col = datafusion::arrow::compute::cast(b.column(0), &DataType::UInt64)?;
        let col = col.as_primitive::<UInt64Type>();
        total += (0..col.len())
            .filter(|i| col.is_valid(*i))
            .map(|i| col.value(i))
            .sum::<u64>();
    }
    Ok(total)
}

/// `(schema, table)` of a reference in the prognos catalog.
pub(crate) fn split_name(r: &TableReference) -> EngineResult<(String, String)> {
    if let Some(c) = r.catalog()
        && c != CATALOG_NAME
    {
        return Err(EngineError::statement(
            StatusCode::FeatureNotSupported,
            format!("cross-database references are not implemented: {r}"),
        ));
    }
    Ok((
        r.schema().unwrap_or(DEFAULT_SCHEMA).to_string(),
        r.table().to_string(),
    ))
}

/// Record a table in the persistent catalog.
fn record(
    engine: &Engine,
    schema: String,
    name: String,
    kind: TableKind,
    replace: bool,
) -> EngineResult<()> {
    engine.catalog.insert(
        TableEntry {
            schema,
            name,
            kind,
            created_at: now(),
        },
        replace,
    )?;
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Storage of a managed table. `root` is relative to the data dir, or an absolute object-store
/// URL for tables created under `storage.tables_url`.
pub(crate) fn managed_store(engine: &Engine, root: &str) -> EngineResult<TableStore> {
    if root.contains("://") {
        let url = url::Url::parse(root).map_err(|e| {
            EngineError::statement(
                StatusCode::InvalidParameterValue,
                format!("table location {root}: {e}"),
            )
        })?;
        let store = engine
            .base
            .runtime_env()
            .object_store_registry
            .get_store(&url)?;
        let path = ObjectPath::from_url_path(url.path()).map_err(|e| {
            EngineError::statement(
                StatusCode::InvalidParameterValue,
                format!("table location {root}: {e}"),
            )
        })?;
        return Ok(TableStore::new(store, path));
    }
    let abs = engine.data_dir.join(root);
    let path = ObjectPath::from_filesystem_path(&abs)
        .unwrap_or_else(|_| ObjectPath::from(abs.to_string_lossy().as_ref()));
    Ok(TableStore::new(Arc::clone(&engine.local), path))
}

pub(crate) fn managed_url(engine: &Engine, root: &str) -> String {
    if root.contains("://") {
        format!("{}/", root.trim_end_matches('/'))
    } else {
        format!("file://{}/", engine.data_dir.join(root).display())
    }
}

fn schema_provider(session: &Session, schema: &str) -> EngineResult<Arc<dyn SchemaProvider>> {
    schema_in(session.ctx().catalog(CATALOG_NAME), schema)
}

/// The provider of `schema` in `catalog` (the prognos catalog), created when missing.
pub(crate) fn schema_in(
    catalog: Option<Arc<dyn datafusion::catalog::CatalogProvider>>,
    schema: &str,
) -> EngineResult<Arc<dyn SchemaProvider>> {
    let catalog = catalog.ok_or_else(|| {
        EngineError::statement(StatusCode::Internal, "default catalog is missing")
    })?;
    if let Some(s) = catalog.schema(schema) {
        return Ok(s);
    }
    let provider: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
    catalog.register_schema(schema, Arc::clone(&provider))?;
    Ok(provider)
}

pub(crate) async fn create_managed(
    engine: &Engine,
    session: &Session,
    c: CreateMemoryTable,
) -> EngineResult<Output> {
    let (schema_name, name) = split_name(&c.name)?;
    let is_ctas = !matches!(c.input.as_ref(), LogicalPlan::EmptyRelation(_));
    let _guard = engine.ddl_lock.lock().await;
    let provider = schema_provider(session, &schema_name)?;
    let existed = provider.table_exist(&name);
    if existed {
        if c.if_not_exists {
            return Ok(command("CREATE TABLE"));
        }
        if !c.or_replace {
            return Err(EngineError::statement(
                StatusCode::DuplicateTable,
                format!("relation \"{name}\" already exists"),
            ));
        }
    }
    let arrow_schema: SchemaRef = Arc::new(Schema::new(
        c.input
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect::<Vec<_>>(),
    ));
    let relative = format!(
        "tables/{schema_name}/{name}-{}",
        uuid::Uuid::new_v4().simple()
    );
    let root = match &engine.tables_url {
        Some(base) => format!("{base}/{relative}"),
        None => relative,
    };
    let table = ManagedTable::create(
        &name,
        Arc::clone(&arrow_schema),
        managed_store(engine, &root)?,
        managed_url(engine, &root),
    )
    .await?;
    let mut rows = 0;
    if is_ctas {
        let df = session
            .ctx()
            .execute_logical_plan(c.input.as_ref().clone())
            .await?;
        let stream = df.execute_stream().await?;
        // Cast to the declared schema so nullability/metadata agree with the manifest.
        let target = Arc::clone(&arrow_schema);
        let stream = stream.map(move |b| {
            let b = b?;
            RecordBatch::try_new(Arc::clone(&target), b.columns().to_vec())
                .map_err(datafusion::error::DataFusionError::from)
        });
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&arrow_schema),
            stream,
        ));
        rows = table.append(stream).await?;
    }
    let entry = TableEntry {
        schema: schema_name.clone(),
        name: name.clone(),
        kind: TableKind::Managed { root: root.clone() },
        created_at: now(),
    };
    if !existed {
        engine.record_owner(session, Securable::table(&schema_name, &name))?;
    }
    // Inside a transaction block the table is the block's until COMMIT.
    let in_block = session.txn().record(Change::Create {
        entry,
        table: table.clone(),
        or_replace: c.or_replace,
        owns_storage: true,
    });
    if in_block {
        return Ok(if is_ctas {
            Output::Command {
                tag: "SELECT".into(),
                rows: Some(rows),
            }
        } else {
            command("CREATE TABLE")
        });
    }
    // Commit point: the table becomes visible (and durable) only now.
    let previous = engine.catalog.get(&schema_name, &name);
    record(
        engine,
        schema_name.clone(),
        name.clone(),
        TableKind::Managed { root },
        c.or_replace,
    )?;
    provider.deregister_table(&name)?;
    provider.register_table(name.clone(), Arc::new(table))?;
    if let Some(TableEntry {
        kind: TableKind::Managed { root: old },
        ..
    }) = previous
        && let Ok(store) = managed_store(engine, &old)
    {
        let _ = store.delete_all().await;
    }
    if is_ctas {
        Ok(Output::Command {
            tag: "SELECT".into(),
            rows: Some(rows),
        })
    } else {
        Ok(command("CREATE TABLE"))
    }
}

/// The location a statement names, checked against the server-file rules when it is local
/// (`server_files`); a trailing `/` (a folder of files) is kept.
fn resolve_location(
    engine: &Engine,
    session: &Session,
    location: &str,
    access: Access,
) -> EngineResult<String> {
    let Some(checked) = engine.checked_local_path(session, location, access)? else {
        return Ok(location.to_string());
    };
    let mut out = checked.display().to_string();
    if location.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

async fn create_external(
    engine: &Engine,
    session: &Session,
    stmt: &DFStatement,
    mut c: CreateExternalTable,
    persist: bool,
) -> EngineResult<Output> {
    let (schema, name) = split_name(&c.name)?;
    let sql = c.definition.clone().unwrap_or_else(|| stmt.to_string());
    c.locations = c
        .locations
        .iter()
        .map(|l| resolve_location(engine, session, l, Access::Read))
        .collect::<EngineResult<_>>()?;
    let temporary = c.temporary;
    let or_replace = c.or_replace;
    if persist {
        not_transactional(session, "CREATE EXTERNAL TABLE");
    }
    let _guard = engine.ddl_lock.lock().await;
    schema_provider(session, &schema)?;
    let existed = session.ctx().table_exist(c.name.clone())?;
    if c.if_not_exists && existed {
        return Ok(command("CREATE EXTERNAL TABLE"));
    }
    session
        .ctx()
        .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateExternalTable(
            Box::new(c),
        )))
        .await?;
    if persist && !temporary {
        record(
            engine,
            schema.clone(),
            name.clone(),
            TableKind::External { sql },
            or_replace,
        )?;
        if !existed {
            engine.record_owner(session, Securable::table(&schema, &name))?;
        }
    }
    Ok(command("CREATE EXTERNAL TABLE"))
}

/// Re-create one catalog entry at start-up.
pub(super) async fn restore_entry(
    engine: &Engine,
    session: &Session,
    entry: &TableEntry,
) -> EngineResult<()> {
    match &entry.kind {
        TableKind::Managed { root } => {
            let table = ManagedTable::open(
                &entry.name,
                managed_store(engine, root)?,
                managed_url(engine, root),
            )
            .await?;
            schema_provider(session, &entry.schema)?
                .register_table(entry.name.clone(), Arc::new(table))?;
            Ok(())
        }
        TableKind::External { sql } | TableKind::View { sql } => {
            schema_provider(session, &entry.schema)?;
            for stmt in engine.parse(sql)? {
                let crate::Statement::Sql(stmt) = stmt else {
                    return Err(EngineError::statement(
                        StatusCode::DataCorrupted,
                        format!("catalog entry {} holds a model statement", entry.name),
                    ));
                };
                let plan = session
                    .ctx()
                    .state()
                    .statement_to_plan(stmt.clone())
                    .await?;
                // The entry's name is the table's (`ALTER TABLE … RENAME TO` changes the entry,
                // not the statement that created it).
                let name = TableReference::partial(entry.schema.as_str(), entry.name.as_str());
                let plan = match plan {
                    LogicalPlan::Ddl(DdlStatement::CreateView(mut v)) => {
                        v.name = name;
                        LogicalPlan::Ddl(DdlStatement::CreateView(v))
                    }
                    LogicalPlan::Ddl(DdlStatement::CreateExternalTable(mut c)) => {
                        c.name = name;
                        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(c))
                    }
                    other => other,
                };
                execute_plan(engine, session, &stmt, plan, false).await?;
            }
            Ok(())
        }
    }
}
