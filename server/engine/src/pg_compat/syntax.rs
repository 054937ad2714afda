//! Postgres semantics of functions in `FROM` that DataFusion lacks, fixed up on the syntax tree.
//!
//! * `FROM generate_series(1, 3) AS i` — Postgres names the single output column after the
//!   alias, so `i` is usable as a column; DataFusion names it `value`. Rewritten to
//!   `AS i(i)`.
//! * `FROM string_to_array(x, ',') s` — Postgres treats a scalar function in `FROM` as a one-row
//!   table whose column is the alias; DataFusion looks for a table function. Rewritten to
//!   `FROM (SELECT string_to_array(x, ',') AS s) AS s`.
//!
//! * unquoted `user` / `current_user` / `session_user` — Postgres' session-user functions
//!   written without parentheses (an unquoted `user` can never be a column there); rewritten
//!   to `session_user()`.
//!
//! * `information_schema.columns` — DataFusion reports Arrow type names (`Int64`, `Utf8`) in
//!   `data_type` and has no `udt_name`; clients pick time and numeric columns by the Postgres
//!   names. Replaced by a derived table that maps the types and adds `udt_name`.
//!
//! * result column names: Postgres names an unaliased `count(*)` column `count`, `CAST(x AS t)`
//!   `x`, `CASE …` `case`, and other expressions `?column?`; DataFusion uses the expression
//!   text (`count(*)`, `Int64(1)`). The outermost select list gets Postgres' names as aliases
//!   (except where two columns would then share a name, which DataFusion rejects).
//!
//! * `ARRAY(SELECT e FROM … [ORDER BY …])` — Postgres' array of a subquery's rows, which
//!   DataFusion lacks; rewritten to the aggregate subquery `(SELECT array_agg(e ORDER BY …)
//!   FROM …)`, correlated or not (psql's `\dp` sends it).
//!
//! * `'pg_catalog.array_in'::regproc` — Postgres shows a `regproc` as the function's name, and
//!   the catalog here stores `pg_type.typinput` & co. as names; the literal becomes the bare
//!   name (`'array_in'`) so comparisons with those columns work (pgjdbc and DBeaver send it).
//!
//! Grafana's SQL builder and other BI tools send these forms in their metadata queries.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArgumentList,
    FunctionArguments, GroupByExpr, Ident, ObjectName, OrderBy, OrderByExpr, OrderByKind, Query,
    SelectItem, SetExpr, Statement, TableAlias, TableAliasColumnDef, TableFactor, UnaryOperator,
    Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Table functions whose single output column Postgres names after the alias.
const SINGLE_COLUMN_SETOF: &[&str] = &["generate_series", "range"];

/// Postgres `data_type` / `udt_name` of a DataFusion `information_schema.columns.data_type`.
const PG_TYPE_NAMES: &[(&str, &str, &str)] = &[
    ("data_type = 'Int64'", "bigint", "int8"),
    ("data_type = 'Int32'", "integer", "int4"),
    (
        "data_type IN ('Int16', 'Int8', 'UInt8')",
        "smallint",
        "int2",
    ),
    ("data_type IN ('UInt16')", "integer", "int4"),
    ("data_type IN ('UInt32')", "bigint", "int8"),
    (
        "data_type = 'UInt64' OR data_type LIKE 'Decimal%'",
        "numeric",
        "numeric",
    ),
    ("data_type = 'Float64'", "double precision", "float8"),
    ("data_type IN ('Float32', 'Float16')", "real", "float4"),
    (
        "data_type IN ('Utf8', 'LargeUtf8', 'Utf8View')",
        "text",
        "text",
    ),
    ("data_type = 'Boolean'", "boolean", "bool"),
    ("data_type IN ('Date32', 'Date64')", "date", "date"),
    (
        "data_type LIKE 'Timestamp(%,%'",
        "timestamp with time zone",
        "timestamptz",
    ),
    (
        "data_type LIKE 'Timestamp(%'",
        "timestamp without time zone",
        "timestamp",
    ),
    ("data_type LIKE 'Time%'", "time without time zone", "time"),
    (
        "data_type LIKE 'Interval%' OR data_type LIKE 'Duration%'",
        "interval",
        "interval",
    ),
    ("data_type LIKE '%Binary%'", "bytea", "bytea"),
    ("data_type LIKE '%List%'", "ARRAY", "_text"),
];

/// The `information_schema.columns` replacement: SQL built from the constant table above (no
/// user text in it) and parsed once per process.
static COLUMNS_WITH_PG_TYPES: std::sync::LazyLock<Option<Query>> =
    std::sync::LazyLock::new(|| build_columns_with_pg_types().map(|q| *q));

fn columns_with_pg_types() -> Option<Box<Query>> {
    COLUMNS_WITH_PG_TYPES.clone().map(Box::new)
}

fn build_columns_with_pg_types() -> Option<Box<Query>> {
    let case = |pick: fn(&(&'static str, &'static str, &'static str)) -> &'static str| {
        let arms: Vec<String> = PG_TYPE_NAMES
            .iter()
            .map(|t| format!("WHEN {} THEN '{}'", t.0, pick(t)))
            .collect();
        format!("CASE {} ELSE lower(data_type) END", arms.join(" "))
    };
    // Quoted names keep this visitor from rewriting the inner reference again.
    let sql = format!(
        "SELECT table_catalog, table_schema, table_name, column_name, ordinal_position, \
         column_default, is_nullable, {} AS data_type, character_maximum_length, \
         character_octet_length, numeric_precision, numeric_precision_radix, numeric_scale, \
         datetime_precision, interval_type, {} AS udt_name, data_type AS arrow_type \
         FROM \"information_schema\".\"columns\"",
        case(|t| t.1),
        case(|t| t.2)
    );
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(256)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .ok()
}

/// `session_user()` with an explicit (empty) argument list, so DataFusion calls the function.
fn session_user_call() -> Option<Expr> {
    let mut e = Parser::new(&PostgreSqlDialect {})
        .try_with_sql("session_user()")
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    if let Expr::Function(f) = &mut e {
        f.args = FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![],
            clauses: vec![],
        });
    }
    Some(e)
}

/// `x [NOT] IN (subquery)` inside a select list (e.g. in a CASE) becomes
/// `[NOT] array_has((SELECT array_agg(v) FROM (subquery) AS t(v)), x)`: a scalar subquery,
/// which DataFusion plans in projections, where it cannot plan `IN (subquery)`.
struct ProjectionInSubquery;

impl VisitorMut for ProjectionInSubquery {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::InSubquery {
            expr: needle,
            subquery,
            negated,
        } = expr
            && let Some(e) = array_has_subquery(needle.as_ref().clone(), subquery.clone(), *negated)
        {
            *expr = e;
        }
        ControlFlow::Continue(())
    }
}

/// `ARRAY(SELECT e FROM … WHERE … [ORDER BY …])` as the scalar subquery
/// `(SELECT array_agg(e [ORDER BY …]) FROM … WHERE …)`: the subquery keeps its FROM and WHERE,
/// so one correlated with the outer query (psql's `\dp` lists each table's columns that way)
/// stays a correlated aggregate DataFusion can plan. Only a plain select of one expression is
/// rewritten (no GROUP BY, DISTINCT, LIMIT or WITH). One difference from PostgreSQL: a
/// subquery without rows gives NULL rather than an empty array.
fn array_of_subquery(mut subquery: Box<Query>) -> Option<Expr> {
    if subquery.with.is_some() || subquery.limit_clause.is_some() || subquery.fetch.is_some() {
        return None;
    }
    let order: Vec<OrderByExpr> = match subquery.order_by.take() {
        None => Vec::new(),
        Some(OrderBy {
            kind: OrderByKind::Expressions(exprs),
            ..
        }) => exprs,
        Some(_) => return None,
    };
    let SetExpr::Select(select) = subquery.body.as_mut() else {
        return None;
    };
    let plain = select.distinct.is_none()
        && select.having.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty());
    let element = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] if plain => {
            e.clone()
        }
        _ => return None,
    };
    // `ORDER BY 1` names the element by position.
    let order: Vec<OrderByExpr> = order
        .into_iter()
        .map(|mut o| {
            if matches!(&o.expr, Expr::Value(v) if v.value == Value::Number("1".into(), false)) {
                o.expr = element.clone();
            }
            o
        })
        .collect();
    let clauses = if order.is_empty() {
        vec![]
    } else {
        vec![FunctionArgumentClause::OrderBy(order)]
    };
    select.projection = vec![SelectItem::UnnamedExpr(call(
        "array_agg(NULL)",
        vec![element],
        clauses,
    )?)];
    Some(Expr::Subquery(subquery))
}

/// The call `template` (a fixed call such as `array_has(NULL, NULL)`) with `args` and
/// `clauses` in place of its arguments: built on the syntax tree, the arguments moved in,
/// never printed and re-parsed.
fn call(template: &str, args: Vec<Expr>, clauses: Vec<FunctionArgumentClause>) -> Option<Expr> {
    let mut call = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(template)
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    let Expr::Function(f) = &mut call else {
        return None;
    };
    let FunctionArguments::List(list) = &mut f.args else {
        return None;
    };
    list.args = args
        .into_iter()
        .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
        .collect();
    list.clauses = clauses;
    Some(call)
}

/// Build `[NOT] array_has((SELECT array_agg(__in_v) FROM (<subquery>) AS __in_t(__in_v)), needle)`
/// on the syntax tree (the user's subquery is moved in, never printed and re-parsed).
fn array_has_subquery(needle: Expr, subquery: Box<Query>, negated: bool) -> Option<Expr> {
    let mut agg = Parser::new(&PostgreSqlDialect {})
        .try_with_sql("SELECT array_agg(__in_v) FROM (SELECT 1) AS __in_t(__in_v)")
        .and_then(|mut p| p.parse_query())
        .ok()?;
    let SetExpr::Select(select) = agg.body.as_mut() else {
        return None;
    };
    let TableFactor::Derived {
        subquery: inner, ..
    } = &mut select.from.first_mut()?.relation
    else {
        return None;
    };
    *inner = subquery;
    let call = call(
        "array_has(NULL, NULL)",
        vec![Expr::Subquery(agg), needle],
        vec![],
    )?;
    Some(if negated {
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: Box::new(call),
        }
    } else {
        call
    })
}

impl VisitorMut for SelectLists {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        let _ = e.visit(&mut ProjectionInSubquery);
                    }
                    _ => {}
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Visits every query of a statement to rewrite its select list.
struct SelectLists;

fn is_user_keyword(s: &str) -> bool {
    ["user", "current_user", "session_user"].contains(&s.to_ascii_lowercase().as_str())
}

struct FromFunctions<'a> {
    table_functions: &'a HashSet<String>,
}

impl VisitorMut for FromFunctions<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let is_user = match &*expr {
            Expr::Identifier(ident) => ident.quote_style.is_none() && is_user_keyword(&ident.value),
            // sqlparser reads `USER` / `CURRENT_USER` as a call without parentheses.
            Expr::Function(f) => {
                matches!(f.args, FunctionArguments::None)
                    && f.name.0.len() == 1
                    && is_user_keyword(&f.name.to_string())
            }
            _ => false,
        };
        if is_user && let Some(e) = session_user_call() {
            *expr = e;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = &*expr
            && f.name.0.len() == 1
            && f.name.to_string().eq_ignore_ascii_case("array")
            && let FunctionArguments::Subquery(q) = &f.args
            && let Some(e) = array_of_subquery(q.clone())
        {
            *expr = e;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = tf
            && name
                .to_string()
                .eq_ignore_ascii_case("information_schema.columns")
            && let Some(query) = columns_with_pg_types()
        {
            *tf = derived_table(query, alias.clone(), "columns");
            return ControlFlow::Continue(());
        }
        let TableFactor::Table {
            name,
            alias: Some(alias),
            args: Some(args),
            ..
        } = tf
        else {
            return ControlFlow::Continue(());
        };
        if !alias.columns.is_empty() {
            return ControlFlow::Continue(());
        }
        let fname = name.to_string().to_ascii_lowercase();
        if self.table_functions.contains(&fname) {
            if SINGLE_COLUMN_SETOF.contains(&fname.as_str()) {
                alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
            }
            return ControlFlow::Continue(());
        }
        let Some(query) = select_call(name, &args.args, &alias.name) else {
            return ControlFlow::Continue(());
        };
        *tf = derived_table(query, Some(alias.clone()), "");
        ControlFlow::Continue(())
    }
}

/// `SELECT f() AS a`, parsed once: [`select_call`] puts the real call and alias in.
static SELECT_CALL: std::sync::LazyLock<Option<Query>> = std::sync::LazyLock::new(|| {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql("SELECT f() AS a")
        .and_then(|mut p| p.parse_query())
        .ok()
        .map(|q| *q)
});

/// `SELECT name(args) AS alias` as a tree (the call and the alias moved in, never printed).
fn select_call(name: &ObjectName, args: &[FunctionArg], alias: &Ident) -> Option<Box<Query>> {
    let mut q = SELECT_CALL.clone()?;
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let Some(SelectItem::ExprWithAlias {
        expr: Expr::Function(f),
        alias: a,
    }) = select.projection.first_mut()
    else {
        return None;
    };
    f.name = name.clone();
    f.args = FunctionArguments::List(FunctionArgumentList {
        duplicate_treatment: None,
        args: args.to_vec(),
        clauses: vec![],
    });
    *a = alias.clone();
    Some(Box::new(q))
}

/// `'schema.name'::regproc` (a string literal cast to `regproc`) → `'name'`.
struct RegprocLiterals;

impl VisitorMut for RegprocLiterals {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = &*expr
            && is_regproc(data_type)
            && let Expr::Value(v) = inner.as_ref()
            && let Value::SingleQuotedString(name) = &v.value
        {
            let bare = name.rsplit('.').next().unwrap_or(name).to_string();
            *expr = Expr::value(Value::SingleQuotedString(bare));
        }
        ControlFlow::Continue(())
    }
}

/// Whether a cast's type is `regproc` (or `pg_catalog.regproc`).
pub(crate) fn is_regproc(data_type: &DataType) -> bool {
    data_type
        .to_string()
        .to_ascii_lowercase()
        .trim_start_matches("pg_catalog.")
        == "regproc"
}

/// Replace `regproc` casts of string literals by the bare function name (see module docs).
pub(crate) fn rewrite_regproc_literals(stmt: &mut Statement) {
    let _ = stmt.visit(&mut RegprocLiterals);
}

/// `(<query>) AS <alias>`, the alias defaulting to `default_name`.
pub(crate) fn derived_table(
    query: Box<Query>,
    alias: Option<TableAlias>,
    default_name: &str,
) -> TableFactor {
    let alias = alias.unwrap_or_else(|| TableAlias {
        explicit: true,
        name: Ident::new(default_name),
        columns: vec![],
        at: None,
    });
    TableFactor::Derived {
        lateral: false,
        subquery: query,
        alias: Some(alias),
        sample: None,
    }
}

/// Apply the rewrites to one statement.
pub(crate) fn rewrite_from_functions(stmt: &mut Statement, table_functions: &HashSet<String>) {
    let _ = stmt.visit(&mut FromFunctions { table_functions });
    let _ = stmt.visit(&mut SelectLists);
    if let Statement::Query(q) = stmt {
        postgres_column_names(q);
    }
}

/// The name Postgres gives an unaliased select-list expression; `None` where DataFusion's
/// name already agrees (plain and qualified column references).
fn postgres_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => None,
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_ascii_lowercase()),
        // `CAST(x AS t)` is named after `x`, `arr[i]` after the array.
        Expr::Cast { expr: inner, .. }
        | Expr::Nested(inner)
        | Expr::CompoundFieldAccess { root: inner, .. } => {
            column_ref_name(inner).or_else(|| postgres_name(inner))
        }
        Expr::Case { .. } => Some("case".into()),
        _ => Some("?column?".into()),
    }
}

/// The column name of a plain or qualified column reference.
fn column_ref_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

fn postgres_column_names(q: &mut Query) {
    let select = match q.body.as_mut() {
        SetExpr::Select(s) => s,
        _ => return,
    };
    let wanted: Vec<Option<String>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => postgres_name(e),
            _ => None,
        })
        .collect();
    // Names the result will have anyway (aliases, columns), to avoid collisions.
    let mut taken: Vec<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_ascii_lowercase()),
            SelectItem::UnnamedExpr(e) => column_ref_name(e).map(|n| n.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let has_wildcard = select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    for (item, name) in select.projection.iter_mut().zip(wanted) {
        let Some(name) = name else { continue };
        let lower = name.to_ascii_lowercase();
        if has_wildcard || taken.contains(&lower) {
            continue;
        }
        if let SelectItem::UnnamedExpr(e) = item {
            taken.push(lower);
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: Ident::with_quote('"', name),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_and_set_returning_functions_in_from() {
        let tf: HashSet<String> = ["generate_series".to_string()].into();
        let mut stmts = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT s[i] FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') s",
        )
        .expect("parse");
        rewrite_from_functions(&mut stmts[0], &tf);
        assert_eq!(
            stmts[0].to_string(),
            "SELECT s[i] AS \"s\" FROM generate_series(1, 2) AS i (i), (SELECT string_to_array('a,b', ',') AS s) s"
        );
    }
}

#[cfg(test)]
mod user_tests {
    use super::*;

    #[test]
    fn regproc_literal_becomes_bare_name() {
        let mut stmts = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT typinput = 'pg_catalog.array_in'::regproc, 'x'::text FROM pg_type",
        )
        .expect("parse");
        rewrite_regproc_literals(&mut stmts[0]);
        assert_eq!(
            stmts[0].to_string(),
            "SELECT typinput = 'array_in', 'x'::TEXT FROM pg_type"
        );
    }

    #[test]
    fn bare_user_becomes_session_user() {
        let tf = HashSet::new();
        let mut stmts = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT CASE WHEN a = 'x' THEN user ELSE a END, \"user\" FROM t",
        )
        .expect("parse");
        rewrite_from_functions(&mut stmts[0], &tf);
        assert_eq!(
            stmts[0].to_string(),
            "SELECT CASE WHEN a = 'x' THEN session_user() ELSE a END AS \"case\", \"user\" FROM t"
        );
    }
}

#[cfg(test)]
mod in_subquery_tests {
    use super::*;

    #[test]
    fn in_subquery_in_select_list_becomes_array_has() {
        let tf = HashSet::new();
        let mut stmts = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT CASE WHEN a IN (SELECT b FROM u) THEN 1 END FROM t WHERE c IN (SELECT d FROM v)",
        )
        .expect("parse");
        rewrite_from_functions(&mut stmts[0], &tf);
        assert_eq!(
            stmts[0].to_string(),
            "SELECT CASE WHEN array_has((SELECT array_agg(__in_v) FROM (SELECT b FROM u) AS __in_t (__in_v)), a) THEN 1 END AS \"case\" FROM t WHERE c IN (SELECT d FROM v)"
        );
    }

    #[test]
    fn array_of_a_subquery_becomes_an_aggregate_subquery() {
        let tf = HashSet::new();
        let rewrite = |sql: &str| {
            let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse");
            rewrite_from_functions(&mut stmts[0], &tf);
            stmts[0].to_string()
        };
        assert_eq!(
            rewrite(
                "SELECT ARRAY(SELECT a || 'x' FROM u WHERE u.k = t.k ORDER BY 1 DESC) AS l FROM t"
            ),
            "SELECT (SELECT array_agg(a || 'x' ORDER BY a || 'x' DESC) FROM u WHERE u.k = t.k) AS l FROM t"
        );
        // Forms it does not rewrite stay as they are.
        for kept in [
            "SELECT ARRAY(SELECT a, b FROM u) AS l",
            "SELECT ARRAY(SELECT a FROM u LIMIT 2) AS l",
            "SELECT ARRAY(SELECT DISTINCT a FROM u) AS l",
        ] {
            assert_eq!(rewrite(kept), kept);
        }
    }
}

#[cfg(test)]
mod column_name_tests {
    use super::*;

    fn rewrite(sql: &str) -> String {
        let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse");
        rewrite_from_functions(&mut stmts[0], &HashSet::new());
        stmts[0].to_string()
    }

    #[test]
    fn postgres_result_column_names() {
        assert_eq!(
            rewrite("SELECT count(*), CAST(a AS INT), b, 1 FROM t"),
            "SELECT count(*) AS \"count\", CAST(a AS INT) AS \"a\", b, 1 AS \"?column?\" FROM t"
        );
        // A second `?column?` would collide: left to DataFusion's own name.
        assert_eq!(rewrite("SELECT 1, 2"), "SELECT 1 AS \"?column?\", 2");
        assert_eq!(rewrite("SELECT *, 1 FROM t"), "SELECT *, 1 FROM t");
        assert_eq!(
            rewrite("SELECT max(x) AS m FROM t"),
            "SELECT max(x) AS m FROM t"
        );
    }
}
