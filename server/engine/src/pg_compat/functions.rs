//! PostgreSQL functions and operators DataFusion lacks, rewritten on the statement tree into
//! forms it plans (their arguments are moved into the new tree, never printed):
//!
//! * `to_regtype(name)` — the type's oid, or NULL when there is no such type (unlike
//!   `name::regtype`, which fails); psycopg 3 looks types up with it when it connects through
//!   SQLAlchemy. Becomes `(SELECT min(oid) FROM pg_catalog.pg_type WHERE typname =
//!   prognos_pg_type_name(name))`.
//! * `pg_table_is_visible(oid)` — whether the relation's schema is on the search path (so
//!   `system.*` is not listed among the user's tables). Becomes `oid IN (SELECT c.oid FROM
//!   pg_class c JOIN pg_namespace n … WHERE array_has(current_schemas(true), n.nspname))`.
//! * `unnest(indkey)` over a catalog vector column (`int2vector` / `oidvector` there, text
//!   here) — `unnest(prognos_catalog_array(indkey))`; and `generate_subscripts(a, d)`, a
//!   set-returning function DataFusion lacks — `unnest(generate_series(1,
//!   array_length(prognos_catalog_array(a), d)))`, which DataFusion zips with the other
//!   `unnest`s of the select list as PostgreSQL does. SQLAlchemy reflects keys and indexes so.
//! * `x [NOT] [I]LIKE p ESCAPE 'c'` with `c` other than backslash (DataFusion takes only the
//!   backslash) — `x LIKE prognos_like_escape(p, 'c')`.
//! * `typreceive != 0` — a `regproc` column compared with oid 0 ("no function"); the catalog
//!   here holds function names, and `-` for none, which PostgreSQL prints for 0 — `typreceive
//!   != '-'`. The ADBC PostgreSQL driver reads the types it can receive so.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart,
    Statement, Value, ValueWithSpan, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Catalog columns that are vectors (`int2vector`, `oidvector`, `int2[]`, `oid[]`) in
/// PostgreSQL and text in the catalog here.
const VECTOR_COLUMNS: &[&str] = &[
    "indkey",
    "indclass",
    "indcollation",
    "indoption",
    "conkey",
    "confkey",
    "conpfeqop",
    "conppeqop",
    "conffeqop",
    "conexclop",
    "proargtypes",
    "stxkeys",
    "partattrs",
    "partclass",
];

/// `regproc` columns of the catalog (function names here, `-` for none).
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
    "aggfnoid",
    "aggtransfn",
    "aggfinalfn",
    "oprcode",
];

/// Rewrite the calls and operators of [the module docs](self) in `stmt`.
pub(crate) fn rewrite_catalog_functions(stmt: &mut Statement) {
    let _ = stmt.visit(&mut CatalogFunctions);
}

struct CatalogFunctions;

impl VisitorMut for CatalogFunctions {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(new) = rewritten(expr) {
            *expr = new;
        }
        ControlFlow::Continue(())
    }
}

fn rewritten(expr: &mut Expr) -> Option<Expr> {
    match expr {
        Expr::Function(f) => {
            let name = match f.name.0.last()? {
                ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
                _ => return None,
            };
            let FunctionArguments::List(list) = &f.args else {
                return None;
            };
            let args: Vec<Expr> = list
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            match (name.as_str(), args.as_slice()) {
                ("to_regtype", [_]) => template(
                    "(SELECT min(oid) FROM pg_catalog.pg_type \
                     WHERE typname = prognos_pg_type_name(NULL))",
                    args,
                ),
                ("pg_table_is_visible", [_]) => template(
                    "NULL IN (SELECT __vis_c.oid FROM pg_catalog.pg_class __vis_c \
                     JOIN pg_catalog.pg_namespace __vis_n ON __vis_n.oid = __vis_c.relnamespace \
                     WHERE array_has(current_schemas(true), __vis_n.nspname))",
                    args,
                ),
                ("unnest", [column]) if is_vector_column(column) => {
                    template("unnest(prognos_catalog_array(NULL))", args)
                }
                ("generate_subscripts", [_, _]) => template(
                    "unnest(generate_series(1, array_length(prognos_catalog_array(NULL), NULL)))",
                    args,
                ),
                _ => None,
            }
        }
        // Rewritten in place: the pattern, and no ESCAPE clause.
        Expr::Like {
            pattern,
            escape_char,
            any: false,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            any: false,
            ..
        } => {
            let escape = other_escape(escape_char.as_ref()?)?;
            **pattern = template(
                "prognos_like_escape(NULL, NULL)",
                vec![pattern.as_ref().clone(), escape],
            )?;
            *escape_char = None;
            None
        }
        Expr::BinaryOp { left, op, right }
            if matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq) =>
        {
            let none = || {
                Box::new(Expr::Value(
                    Value::SingleQuotedString("-".into()).with_empty_span(),
                ))
            };
            let (l, r) = if is_regproc_column(left) && is_zero(right) {
                (left.clone(), none())
            } else if is_regproc_column(right) && is_zero(left) {
                (none(), right.clone())
            } else {
                return None;
            };
            Some(Expr::BinaryOp {
                left: l,
                op: op.clone(),
                right: r,
            })
        }
        _ => None,
    }
}

fn is_regproc_column(e: &Expr) -> bool {
    column_named(e, REGPROC_COLUMNS)
}

fn is_zero(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "0"))
}

/// An `ESCAPE` value other than the backslash, as a string literal expression.
fn other_escape(v: &ValueWithSpan) -> Option<Expr> {
    match &v.value {
        Value::SingleQuotedString(s) if s != "\\" => Some(Expr::Value(v.clone())),
        _ => None,
    }
}

fn is_vector_column(e: &Expr) -> bool {
    column_named(e, VECTOR_COLUMNS)
}

/// Whether `e` is a reference to a column with one of `names`.
fn column_named(e: &Expr, names: &[&str]) -> bool {
    let name = match e {
        Expr::Identifier(i) => &i.value,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(i) => &i.value,
            None => return false,
        },
        _ => return false,
    };
    names.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// The expression `sql` (a constant template) with its `NULL` literals replaced, in order,
/// by `args`; `None` when the counts differ.
fn template(sql: &str, args: Vec<Expr>) -> Option<Expr> {
    struct Fill {
        args: std::vec::IntoIter<Expr>,
        missing: bool,
    }
    impl VisitorMut for Fill {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if matches!(e, Expr::Value(v) if v.value == Value::Null) {
                match self.args.next() {
                    Some(a) => *e = a,
                    None => self.missing = true,
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut e = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    let mut fill = Fill {
        args: args.into_iter(),
        missing: false,
    };
    let _ = e.visit(&mut fill);
    (!fill.missing && fill.args.next().is_none()).then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0);
        rewrite_catalog_functions(&mut stmt);
        stmt.to_string()
    }

    #[test]
    fn to_regtype_becomes_a_pg_type_lookup() {
        assert_eq!(
            rewrite("SELECT typname FROM pg_type t WHERE t.oid = to_regtype($1)"),
            "SELECT typname FROM pg_type t WHERE t.oid = (SELECT min(oid) FROM pg_catalog.pg_type \
             WHERE typname = prognos_pg_type_name($1))"
        );
    }

    #[test]
    fn vectors_subscripts_visibility_and_like_escapes() {
        let out = rewrite(
            "SELECT unnest(i.indkey) AS k, generate_subscripts(i.indkey, 1) AS o, unnest(x) \
             FROM pg_index i WHERE pg_table_is_visible(i.indrelid) AND n NOT LIKE 'pg/_%' ESCAPE '/'",
        );
        assert!(
            out.contains("unnest(prognos_catalog_array(i.indkey)) AS k"),
            "{out}"
        );
        assert!(
            out.contains(
                "unnest(generate_series(1, array_length(prognos_catalog_array(i.indkey), 1))) AS o"
            ),
            "{out}"
        );
        assert!(out.contains("unnest(x)"), "{out}");
        assert!(out.contains("i.indrelid IN (SELECT __vis_c.oid"), "{out}");
        assert!(
            out.contains("n NOT LIKE prognos_like_escape('pg/_%', '/')"),
            "{out}"
        );
        let out =
            rewrite("SELECT oid FROM pg_type WHERE (typreceive != 0 OR 0 = t.typsend) AND x = 0");
        assert!(
            out.contains("typreceive <> '-'") || out.contains("typreceive != '-'"),
            "{out}"
        );
        assert!(out.contains("'-' = t.typsend"), "{out}");
        assert!(out.contains("x = 0"), "{out}");
        // A backslash escape is DataFusion's own: left alone.
        assert!(rewrite("SELECT 1 WHERE a LIKE 'x\\_%' ESCAPE '\\'").contains("ESCAPE"));
    }
}
