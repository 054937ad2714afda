//! Scalar subqueries that do not aggregate, as PostgreSQL runs them.
//!
//! PostgreSQL takes `(SELECT v FROM t WHERE t.id = o.id)` anywhere an expression goes and fails
//! at run time (`21000`) when it yields more than one row; DataFusion plans a correlated
//! scalar subquery only when it aggregates. So a plain scalar subquery `(SELECT v …)` becomes
//! `prognos_single_value((SELECT array_agg(v) …))` (see `prognos_udfs::single_row`): NULL for
//! no row, the value for one, and PostgreSQL's error for more, checked where the value is
//! used — the same meaning, in a form DataFusion decorrelates. SQLAlchemy's column reflection and other clients' catalog queries
//! are written this way.
//!
//! The array constructor `ARRAY(SELECT v …)` gets the same treatment:
//! `coalesce((SELECT array_agg(v) …), make_array())` — an empty array when there is no row,
//! as in PostgreSQL (psql's `\du` lists memberships so).
//!
//! Left alone: subqueries that aggregate, group, use DISTINCT, a window, ORDER BY / LIMIT /
//! FETCH, a set operation, or no FROM (`(SELECT 1)`).

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableFactor, Visit, VisitMut, Visitor,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Wrap the select item of every plain scalar subquery of `stmt` (see the module docs).
/// `aggregates` holds the names (lower case) of the session's aggregate functions.
pub(crate) fn single_row_subqueries(stmt: &mut Statement, aggregates: &HashSet<String>) {
    let _ = stmt.visit(&mut Wrap {
        aggregates,
        in_from_function: 0,
    });
}

struct Wrap<'a> {
    aggregates: &'a HashSet<String>,
    /// Inside the arguments of a function in FROM (`EVALUATE('m', (SELECT …))`), where a
    /// subquery is a relation, not a value.
    in_from_function: usize,
}

fn is_from_function(t: &TableFactor) -> bool {
    matches!(
        t,
        TableFactor::Table { args: Some(_), .. }
            | TableFactor::Function { .. }
            | TableFactor::TableFunction { .. }
    )
}

impl VisitorMut for Wrap<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
        if is_from_function(t) {
            self.in_from_function += 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
        if is_from_function(t) {
            self.in_from_function -= 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if self.in_from_function == 0
            && let Expr::Subquery(q) = expr
            && aggregate_item(q, self.aggregates)
            && let Some(call) = call(NAME_SINGLE_VALUE, Expr::Subquery(q.clone()))
        {
            *expr = call;
        } else if let Some(rewritten) = array_constructor(expr, self.aggregates) {
            *expr = rewritten;
        }
        ControlFlow::Continue(())
    }
}

const NAME_SINGLE_VALUE: &str = prognos_udfs::single_row::NAME;

/// Turn the select item of a plain scalar subquery into `array_agg(item)`; false (and `q`
/// unchanged) when the subquery is not one to rewrite.
fn aggregate_item(q: &mut Query, aggregates: &HashSet<String>) -> bool {
    if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return false;
    }
    let SetExpr::Select(select) = q.body.as_mut() else {
        return false;
    };
    let groups = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => exprs.is_empty() && modifiers.is_empty(),
        GroupByExpr::All(_) => false,
    };
    if !groups
        || select.distinct.is_some()
        || select.having.is_some()
        || !select.named_window.is_empty()
        || select.from.is_empty()
        || select.projection.len() != 1
    {
        return false;
    }
    let (item, alias) = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) => (e, output_name(e)),
        SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.clone())),
        _ => return false,
    };
    if aggregates_or_windows(item, aggregates) {
        return false;
    }
    let Some(agg) = call("array_agg", item.clone()) else {
        return false;
    };
    select.projection[0] = match alias {
        Some(alias) => SelectItem::ExprWithAlias { expr: agg, alias },
        None => SelectItem::UnnamedExpr(agg),
    };
    true
}

/// `ARRAY(SELECT v …)` as `coalesce((SELECT array_agg(v) …), make_array())`, when the
/// subquery is a plain one (see the module docs).
fn array_constructor(expr: &Expr, aggregates: &HashSet<String>) -> Option<Expr> {
    let Expr::Function(f) = expr else {
        return None;
    };
    let is_array = matches!(
        f.name.0.as_slice(),
        [ObjectNamePart::Identifier(i)] if i.value.eq_ignore_ascii_case("array")
    );
    let FunctionArguments::Subquery(q) = &f.args else {
        return None;
    };
    if !is_array {
        return None;
    }
    let mut q = q.clone();
    if !aggregate_item(&mut q, aggregates) {
        return None;
    }
    let mut empty = call(
        "make_array",
        Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()),
    )?;
    if let Expr::Function(e) = &mut empty
        && let FunctionArguments::List(list) = &mut e.args
    {
        list.args.clear();
    }
    let mut out = call("coalesce", Expr::Subquery(q))?;
    if let Expr::Function(c) = &mut out
        && let FunctionArguments::List(list) = &mut c.args
    {
        list.args
            .push(FunctionArg::Unnamed(FunctionArgExpr::Expr(empty)));
    }
    Some(out)
}

/// The name a column reference gives its output column (`t.v` → `v`).
fn output_name(e: &Expr) -> Option<Ident> {
    match e {
        Expr::Identifier(i) => Some(i.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().cloned(),
        _ => None,
    }
}

/// Whether `e` calls an aggregate or window function outside nested subqueries.
fn aggregates_or_windows(e: &Expr, aggregates: &HashSet<String>) -> bool {
    struct Finder<'a> {
        aggregates: &'a HashSet<String>,
        depth: usize,
        found: bool,
    }
    impl Visitor for Finder<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.depth == 0
                && let Expr::Function(f) = e
            {
                let name = f.name.0.last().and_then(|p| match p {
                    ObjectNamePart::Identifier(i) => Some(i.value.to_lowercase()),
                    _ => None,
                });
                if f.over.is_some() || name.is_some_and(|n| self.aggregates.contains(&n)) {
                    self.found = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder {
        aggregates,
        depth: 0,
        found: false,
    };
    let _ = e.visit(&mut f);
    f.found
}

/// `name(<e>)`, built on the tree (`e` is moved in, never printed).
fn call(name: &str, e: Expr) -> Option<Expr> {
    let mut call = Parser::new(&PostgreSqlDialect {})
        .try_with_sql("f(NULL)")
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    let Expr::Function(f) = &mut call else {
        return None;
    };
    f.name = ObjectName::from(vec![Ident::new(name)]);
    let FunctionArguments::List(list) = &mut f.args else {
        return None;
    };
    list.args = vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(e))];
    Some(call)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0);
        let aggregates: HashSet<String> = ["max", "count"].iter().map(|s| s.to_string()).collect();
        single_row_subqueries(&mut stmt, &aggregates);
        stmt.to_string()
    }

    #[test]
    fn plain_scalar_subqueries_are_wrapped_and_keep_their_name() {
        let out = rewritten("SELECT (SELECT t.v FROM t WHERE t.id = o.id) FROM o");
        assert_eq!(
            out,
            "SELECT prognos_single_value((SELECT array_agg(t.v) AS v FROM t WHERE t.id = o.id)) \
             FROM o"
        );
        let out =
            rewritten("SELECT CASE WHEN (SELECT c FROM t WHERE t.id = o.id) > 1 THEN 1 END FROM o");
        assert!(
            out.contains("prognos_single_value((SELECT array_agg(c) AS c"),
            "{out}"
        );
    }

    #[test]
    fn aggregating_limited_and_from_less_subqueries_are_left_alone() {
        for sql in [
            "SELECT (SELECT max(v) FROM t WHERE t.id = o.id) FROM o",
            "SELECT (SELECT v FROM t WHERE t.id = o.id ORDER BY v LIMIT 1) FROM o",
            "SELECT (SELECT DISTINCT v FROM t) FROM o",
            "SELECT (SELECT 1)",
            "SELECT (SELECT row_number() OVER () FROM t) FROM o",
            "SELECT (SELECT v FROM t GROUP BY v) FROM o",
            "SELECT * FROM evaluate('m', (SELECT v FROM t))",
        ] {
            assert!(!rewritten(sql).contains("prognos_single_value"), "{sql}");
        }
    }

    #[test]
    fn array_constructors_aggregate_and_default_to_an_empty_array() {
        let out = rewritten(
            "SELECT ARRAY(SELECT b.rolname FROM m JOIN r b ON m.roleid = b.oid WHERE m.member = o.oid) AS memberof FROM o",
        );
        assert_eq!(
            out,
            "SELECT coalesce((SELECT array_agg(b.rolname) AS rolname FROM m JOIN r b ON m.roleid = b.oid \
             WHERE m.member = o.oid), make_array()) AS memberof FROM o"
        );
        let kept = "SELECT ARRAY(SELECT v FROM t ORDER BY v) FROM o";
        assert!(!rewritten(kept).contains("coalesce"), "{kept}");
    }
}
