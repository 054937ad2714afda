//! `INSERT INTO t SELECT … FROM (VALUES …) AS v(…)`: a `VALUES` list nested in an insert's
//! query is planned as its own rows, not as rows of `t`.
//!
//! DataFusion 55 plans an insert's source with the target table's schema in its planner
//! context, meant for `INSERT INTO t VALUES (…)`, and applies it to every `VALUES` list in the
//! source, nested ones included: `INSERT INTO t SELECT … CROSS JOIN (VALUES ('a'), ('b'))
//! AS s(store)` fails with "Inconsistent data length across values list" when `t` has another
//! width, and with the same width the literals are cast to `t`'s column types. Until that is
//! fixed upstream, the statement tree is rewritten before planning: each nested `VALUES` list
//! becomes the `UNION ALL` of one `SELECT` per row (`column1`, `column2`, … as `VALUES`
//! names its columns), which plans without the table schema. A source that is itself a
//! `VALUES` list is left as it is.

use std::borrow::Cow;
use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Ident, Query, SelectItem, SetExpr, SetOperator, SetQuantifier, Statement, Visit, VisitMut,
    Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `stmt` with the `VALUES` lists nested in an insert's query rewritten (see the module docs);
/// any other statement as it is.
pub(crate) fn nested_values_planned_alone(stmt: &DFStatement) -> Cow<'_, DFStatement> {
    let DFStatement::Statement(s) = stmt else {
        return Cow::Borrowed(stmt);
    };
    let Statement::Insert(insert) = s.as_ref() else {
        return Cow::Borrowed(stmt);
    };
    let Some(source) = &insert.source else {
        return Cow::Borrowed(stmt);
    };
    if matches!(source.body.as_ref(), SetExpr::Values(_))
        || Visit::visit(source.as_ref(), &mut FindValues).is_continue()
    {
        return Cow::Borrowed(stmt);
    }
    let mut copy = s.as_ref().clone();
    if let Statement::Insert(insert) = &mut copy
        && let Some(source) = &mut insert.source
    {
        let _ = VisitMut::visit(source.as_mut(), &mut ValuesAsSelects);
    }
    Cow::Owned(DFStatement::Statement(Box::new(copy)))
}

/// Whether a set expression holds a `VALUES` list (not looking into nested queries).
fn has_values(body: &SetExpr) -> bool {
    match body {
        SetExpr::Values(_) => true,
        SetExpr::SetOperation { left, right, .. } => has_values(left) || has_values(right),
        _ => false,
    }
}

/// Stops at the first query whose body holds a `VALUES` list.
struct FindValues;

impl Visitor for FindValues {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if has_values(&query.body) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Rewrites the `VALUES` lists of every query it visits.
struct ValuesAsSelects;

impl VisitorMut for ValuesAsSelects {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        rewrite(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn rewrite(body: &mut SetExpr) {
    match body {
        SetExpr::Values(values) => {
            let rows = std::mem::take(&mut values.rows);
            let selects = rows.into_iter().filter_map(|row| row_select(row.content));
            if let Some(union) = selects.reduce(|left, right| SetExpr::SetOperation {
                left: Box::new(left),
                op: SetOperator::Union,
                set_quantifier: SetQuantifier::All,
                right: Box::new(right),
            }) {
                *body = union;
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            rewrite(left);
            rewrite(right);
        }
        _ => {}
    }
}

/// `SELECT e1 AS column1, e2 AS column2, …` for one row.
fn row_select(row: Vec<datafusion::sql::sqlparser::ast::Expr>) -> Option<SetExpr> {
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql("SELECT 1")
        .and_then(|mut p| p.parse_query())
        .ok()?;
    let SetExpr::Select(mut select) = *parsed.body else {
        return None;
    };
    select.projection = row
        .into_iter()
        .enumerate()
        .map(|(i, expr)| SelectItem::ExprWithAlias {
            expr,
            alias: Ident::new(format!("column{}", i + 1)),
        })
        .collect();
    Some(SetExpr::Select(select))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let stmt = DFStatement::Statement(Box::new(
            Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .expect("parse")
                .remove(0),
        ));
        nested_values_planned_alone(&stmt).to_string()
    }

    #[test]
    fn nested_values_become_selects_and_a_values_source_stays() {
        assert_eq!(
            rewritten("INSERT INTO t SELECT x, s FROM u CROSS JOIN (VALUES ('a'), ('b')) AS v(s)"),
            "INSERT INTO t SELECT x, s FROM u CROSS JOIN (SELECT 'a' AS column1 UNION ALL \
             SELECT 'b' AS column1) AS v (s)"
        );
        let plain = "INSERT INTO t VALUES (1, 'a'), (2, 'b')";
        assert_eq!(rewritten(plain), plain);
        let select = "INSERT INTO t SELECT * FROM u";
        assert_eq!(rewritten(select), select);
    }
}
