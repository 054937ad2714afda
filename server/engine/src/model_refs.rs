//! The models a statement may use, found before it is planned: every single-quoted string
//! literal in its tree is a candidate name (the model functions take the name as their first
//! argument, a literal). Candidates that are not models are ignored by
//! [`prognos_catalog::ModelSnapshot::preload`], so over-collecting costs a map lookup.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Value, Visit, Visitor};

use crate::{ModelStatement, Statement};

#[derive(Default)]
struct Literals(BTreeSet<String>);

impl Visitor for Literals {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = expr
            && let Value::SingleQuotedString(s) = &v.value
        {
            self.0.insert(s.clone());
        }
        ControlFlow::Continue(())
    }
}

fn collect_df(stmt: &DFStatement, out: &mut Literals) {
    let _ = match stmt {
        DFStatement::Statement(s) => s.visit(out),
        DFStatement::CopyTo(c) => match &c.source {
            CopyToSource::Query(q) => q.visit(out),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::Explain(e) => {
            collect_df(&e.statement, out);
            ControlFlow::Continue(())
        }
        DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => ControlFlow::Continue(()),
    };
}

/// Candidate model names in `stmt`.
pub(crate) fn candidates(stmt: &Statement) -> BTreeSet<String> {
    let mut out = Literals::default();
    match stmt {
        Statement::Sql(s) => collect_df(s, &mut out),
        Statement::Model(ModelStatement::Create { query, .. }) => {
            let _ = query.visit(&mut out);
        }
        Statement::Model(_) | Statement::Role(_) | Statement::Backup(_) => {}
    }
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_in_queries_copy_and_explain() {
        let dialect = crate::parser::PrognosDialect::default();
        for (sql, name) in [
            ("SELECT PREDICT('churn', a) FROM t", "churn"),
            ("SELECT * FROM FORECAST('demand')", "demand"),
            ("EXPLAIN SELECT predict_proba('p', 1)", "p"),
            ("COPY (SELECT PREDICT('c', x) FROM t) TO '/tmp/o.csv'", "c"),
            ("SELECT * FROM t WHERE PREDICT('w', a) > 0", "w"),
        ] {
            let stmt = datafusion::sql::parser::DFParserBuilder::new(sql)
                .with_dialect(&dialect)
                .build()
                .and_then(|mut p| p.parse_statement())
                .expect(sql);
            let found = candidates(&Statement::Sql(stmt));
            assert!(found.contains(name), "{sql}: {found:?}");
        }
    }
}
