//! `ALTER MODEL m SET LOGGING (…) | RESET LOGGING | SET OUTCOMES FROM (…) | RESET OUTCOMES`:
//! where a model's predictions are logged and what they are compared with.
//!
//! The log table is a managed table (`<model>_predictions` in `public` unless `table = 's.t'`
//! names another) made by the statement and owned by the role that ran it (the model's owner
//! or a superuser): other roles read it only when granted `SELECT`. Its columns are `ts,
//! version, key`, the features with their training types, `prediction` and `scores`
//! (`prognos_udfs::prediction_log::log_schema`). Rows arrive through
//! [`crate::prediction_writer`].

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DFSchema, TableReference};
use datafusion::logical_expr::{CreateMemoryTable, EmptyRelation, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use prognos_catalog::PredictionLogging;
use prognos_udfs::prediction_log as log;

use crate::Engine;
use crate::error::{EngineError, EngineResult, StatusCode};
use crate::session::Session;

/// Rows a log table keeps unless `max_rows` says otherwise.
pub(crate) const DEFAULT_MAX_ROWS: u64 = 1_000_000;

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::statement(StatusCode::InvalidParameterValue, msg)
}

/// `SET LOGGING (options)`: check the options, make (or reuse) the log table, record the
/// setting. Returns what the NOTICE says.
pub(crate) async fn set_logging(
    engine: &Engine,
    session: &Session,
    model: &str,
    options: &BTreeMap<String, String>,
) -> EngineResult<String> {
    if session.in_transaction() {
        return Err(EngineError::statement(
            StatusCode::InvalidStatement,
            "ALTER MODEL ... SET LOGGING cannot run inside a transaction block (it makes the \
             log table)",
        ));
    }
    let mut logging = PredictionLogging {
        sample: 1.0,
        key: None,
        schema: crate::DEFAULT_SCHEMA.to_string(),
        table: format!("{model}_predictions"),
        max_rows: DEFAULT_MAX_ROWS,
    };
    for (k, v) in options {
        match k.as_str() {
            "sample" => {
                logging.sample = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= 1.0)
                    .ok_or_else(|| {
                        invalid(format!(
                            "SET LOGGING: sample must be a share in (0, 1], got {v}"
                        ))
                    })?;
            }
            "key" => logging.key = Some(v.clone()),
            "table" => {
                let r = TableReference::parse_str(v);
                let (schema, table) = crate::statements::split_name(&r)?;
                logging.schema = schema;
                logging.table = table;
            }
            "max_rows" => {
                logging.max_rows = v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(format!(
                        "SET LOGGING: max_rows must be a positive integer, got {v}"
                    ))
                })?;
            }
            other => {
                return Err(invalid(format!(
                    "unknown SET LOGGING option \"{other}\" (known: sample, key, table, \
                     max_rows)"
                )));
            }
        }
    }
    let snapshot = engine.registry.snapshot();
    let (version, artifact) = snapshot.load(model).await.map_err(|e| {
        EngineError::statement(
            StatusCode::ObjectNotInPrerequisiteState,
            format!("SET LOGGING needs a deployed version of model \"{model}\": {e}"),
        )
    })?;
    let wanted: SchemaRef = Arc::new(log::log_schema(&artifact));
    ensure_table(engine, session, &logging, &wanted).await?;
    let said = format!(
        "model \"{model}\": {} of its predictions logged to {}.{}{} (version {version} deployed)",
        share(logging.sample),
        logging.schema,
        logging.table,
        match &logging.key {
            Some(k) => format!(" with key {k}"),
            None => String::new(),
        },
    );
    engine.registry.set_logging(model, Some(logging)).await?;
    Ok(said)
}

fn share(sample: f64) -> String {
    if sample >= 1.0 {
        "all".to_string()
    } else {
        format!("{}%", (sample * 1000.0).round() / 10.0)
    }
}

/// Make the log table, or check that the table of that name is one.
async fn ensure_table(
    engine: &Engine,
    session: &Session,
    logging: &PredictionLogging,
    wanted: &SchemaRef,
) -> EngineResult<()> {
    let reference = TableReference::partial(logging.schema.as_str(), logging.table.as_str());
    if let Some(existing) =
        crate::transaction::commit::committed_managed(engine, &logging.schema, &logging.table).await
    {
        let have = datafusion::catalog::TableProvider::schema(&existing);
        let fits = [
            log::TS_COLUMN,
            log::VERSION_COLUMN,
            log::KEY_COLUMN,
            log::PREDICTION_COLUMN,
            log::SCORES_COLUMN,
        ]
        .iter()
        .all(|c| have.field_with_name(c).is_ok());
        if !fits {
            return Err(EngineError::statement(
                StatusCode::DuplicateTable,
                format!(
                    "relation \"{reference}\" already exists and is not a prediction log \
                     (name another with table => '...')"
                ),
            ));
        }
        return Ok(());
    }
    if engine
        .catalog
        .get(&logging.schema, &logging.table)
        .is_some()
    {
        return Err(EngineError::statement(
            StatusCode::DuplicateTable,
            format!("relation \"{reference}\" already exists and is not a managed table"),
        ));
    }
    let df_schema = DFSchema::try_from(wanted.as_ref().clone())?;
    let create = CreateMemoryTable {
        name: reference,
        constraints: Default::default(),
        input: Arc::new(LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(df_schema),
        })),
        if_not_exists: true,
        or_replace: false,
        column_defaults: vec![],
        temporary: false,
    };
    crate::statements::create_managed(engine, session, create).await?;
    engine.bump_epoch();
    Ok(())
}

/// `SET OUTCOMES FROM (query)`: plan the query as the session's role to check it reads and
/// has `key` and `actual`; returns the query as it is stored.
pub(crate) async fn check_outcomes(session: &Session, query: &Query) -> EngineResult<String> {
    let statement = DFStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
    let plan = session.ctx().state().statement_to_plan(statement).await?;
    let schema = plan.schema();
    for column in ["key", "actual"] {
        if schema.fields().iter().all(|f| f.name() != column) {
            return Err(EngineError::statement(
                StatusCode::UndefinedColumn,
                format!(
                    "SET OUTCOMES FROM needs a query with columns key and actual (and \
                     optionally ts): it has {}",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(query.to_string())
}

/// `MODEL_MONITOR('m', …)` reads the model's log table and its outcomes query, which the
/// statement does not name: this gives each such call of `stmt` its relations as hidden
/// arguments (`__log => (SELECT * FROM log)`, `__outcomes => (query)`), so DataFusion resolves
/// their tables with the statement's and the role's privileges apply to them as to any
/// subquery. Statements without the call are returned as they are.
pub(crate) fn with_monitor_relations<'a>(
    engine: &Engine,
    stmt: &'a DFStatement,
) -> std::borrow::Cow<'a, DFStatement> {
    use datafusion::sql::sqlparser::ast::{Visit, VisitMut};
    let DFStatement::Statement(s) = stmt else {
        return std::borrow::Cow::Borrowed(stmt);
    };
    // Read-only first: most statements call no MODEL_MONITOR and are not copied.
    if Visit::visit(s.as_ref(), &mut FindMonitorCall).is_continue() {
        return std::borrow::Cow::Borrowed(stmt);
    }
    let mut copy = s.as_ref().clone();
    let _ = VisitMut::visit(&mut copy, &mut MonitorCalls { engine });
    std::borrow::Cow::Owned(DFStatement::Statement(Box::new(copy)))
}

/// Whether a table factor is a `MODEL_MONITOR(...)` call.
fn is_monitor_call(t: &datafusion::sql::sqlparser::ast::TableFactor) -> bool {
    matches!(t, datafusion::sql::sqlparser::ast::TableFactor::Table { name, args: Some(_), .. }
        if name.to_string().eq_ignore_ascii_case("model_monitor"))
}

/// Stops at the first `MODEL_MONITOR` call of a statement.
struct FindMonitorCall;

impl datafusion::sql::sqlparser::ast::Visitor for FindMonitorCall {
    type Break = ();

    fn pre_visit_table_factor(
        &mut self,
        t: &datafusion::sql::sqlparser::ast::TableFactor,
    ) -> std::ops::ControlFlow<()> {
        if is_monitor_call(t) {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }
}

/// Completes the `MODEL_MONITOR` calls of a statement with their hidden relations.
struct MonitorCalls<'a> {
    engine: &'a Engine,
}

impl datafusion::sql::sqlparser::ast::VisitorMut for MonitorCalls<'_> {
    type Break = ();

    fn pre_visit_table_factor(
        &mut self,
        t: &mut datafusion::sql::sqlparser::ast::TableFactor,
    ) -> std::ops::ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{
            Expr, FunctionArg, FunctionArgExpr, FunctionArgOperator, Ident, TableFactor, Value,
        };
        if !is_monitor_call(t) {
            return std::ops::ControlFlow::Continue(());
        }
        let TableFactor::Table {
            args: Some(args), ..
        } = t
        else {
            return std::ops::ControlFlow::Continue(());
        };
        let model = match args.args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
                Value::SingleQuotedString(s) => s.clone(),
                _ => return std::ops::ControlFlow::Continue(()),
            },
            _ => return std::ops::ControlFlow::Continue(()),
        };
        let Some(entry) = self
            .engine
            .registry
            .get(&model)
            .or_else(|| self.engine.registry.get(&model.to_ascii_lowercase()))
        else {
            return std::ops::ControlFlow::Continue(());
        };
        let mut hidden = |name: &str, query: Query| {
            args.args.push(FunctionArg::Named {
                name: Ident::new(name),
                arg: FunctionArgExpr::Expr(Expr::Subquery(Box::new(query))),
                operator: FunctionArgOperator::RightArrow,
            });
        };
        if let Some(l) = &entry.logging
            && let Some(q) = select_all(&l.schema, &l.table)
        {
            hidden(prognos_udfs::relations::MONITOR_LOG_ARG, q);
        }
        if let Some(text) = &entry.outcomes
            && let Some(q) = parse_query(text)
        {
            hidden(prognos_udfs::relations::MONITOR_OUTCOMES_ARG, q);
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// `SELECT * FROM "schema"."table"` as a tree.
fn select_all(schema: &str, table: &str) -> Option<Query> {
    crate::parser::dialect::select_all_from(quoted_name(schema, table)).ok()
}

/// `"schema"."table"`.
fn quoted_name(schema: &str, table: &str) -> datafusion::sql::sqlparser::ast::ObjectName {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart};
    ObjectName(vec![
        ObjectNamePart::Identifier(Ident::with_quote('"', schema)),
        ObjectNamePart::Identifier(Ident::with_quote('"', table)),
    ])
}

/// Renames the relations called `from` (one unqualified name) to `"schema"."table"`.
pub(crate) struct RenameRelation {
    from: &'static str,
    to: datafusion::sql::sqlparser::ast::ObjectName,
}

impl RenameRelation {
    /// Rename `from` to `"schema"."table"`.
    pub(crate) fn new(from: &'static str, schema: &str, table: &str) -> Self {
        Self {
            from,
            to: quoted_name(schema, table),
        }
    }
}

impl datafusion::sql::sqlparser::ast::VisitorMut for RenameRelation {
    type Break = ();

    fn pre_visit_relation(
        &mut self,
        relation: &mut datafusion::sql::sqlparser::ast::ObjectName,
    ) -> std::ops::ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::ObjectNamePart;
        if let [ObjectNamePart::Identifier(i)] = relation.0.as_slice()
            && i.value == self.from
        {
            *relation = self.to.clone();
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// One stored query parsed back into its tree.
fn parse_query(text: &str) -> Option<Query> {
    crate::parser::dialect::one_query(text).ok()
}
