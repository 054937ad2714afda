//! Postgres client compatibility, applied to parsed statements.
//!
//! psql, pgjdbc, Grafana and BI tools send catalog queries that DataFusion cannot run as
//! written; datafusion-pg-catalog knows them and rewrites them. Some of its rewrites change a
//! query's meaning (correlated scalar subqueries in a select list become NULL, scalar
//! subqueries get `LIMIT 1`), which is harmless for those catalog queries and wrong for
//! anything else. So the decision is made on the statement's structure, never on its text:
//!
//! * a statement that reads `pg_catalog` — its tables and views, qualified or by their bare
//!   `pg_…` name as Postgres' search path finds them, or `'…'::regclass`-style casts, which
//!   read `pg_class` & co. — and no user relation ([`CatalogUse::Only`]) gets the full
//!   treatment: the library's whole-query replacements of known client queries and all of its
//!   rules;
//! * every other statement — one over user tables, even a table named `pg_events`, one that
//!   joins user tables to the catalog, or one that reads only `information_schema` (whose
//!   views DataFusion plans as they are, correlated subqueries included) — gets only the rules
//!   that keep a query's meaning.
//!
//! [`syntax`] holds prognos' own fix-ups of Postgres syntax that DataFusion lacks,
//! [`subqueries`] PostgreSQL's plain scalar subqueries, [`functions`] catalog functions.

pub(crate) mod catalog_tables;
pub(crate) mod class_acl;
pub(crate) mod functions;
pub(crate) mod role_tables;
pub(crate) mod subqueries;
pub(crate) mod syntax;

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, ObjectName, ObjectNamePart, Statement, TableFactor, Visit, Visitor,
};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall,
    FixArrayLiteral, FixVersionColumnName, PrependUnqualifiedPgTableName,
    ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation, RewritePgCatalogOperator,
    RewriteRegCastToSubquery, SqlStatementRewriteRule, StripCallableQualifier, StripCollate,
};

/// The schema of Postgres' system catalog.
const PG_CATALOG: &str = "pg_catalog";
/// The SQL-standard catalog views: neither a user relation nor a reason for the full rewrite.
const INFORMATION_SCHEMA: &str = "information_schema";

/// Postgres' object-identifier alias types: a cast to one of them looks a name up in the
/// catalog (`'t'::regclass` reads `pg_class`).
const OID_ALIAS_TYPES: &[&str] = &[
    "regclass",
    "regproc",
    "regprocedure",
    "regtype",
    "regnamespace",
    "regoper",
    "regoperator",
    "regrole",
    "regconfig",
    "regdictionary",
    "regcollation",
];

/// What a statement reads of `pg_catalog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CatalogUse {
    /// No `pg_catalog` object.
    None,
    /// `pg_catalog` objects and user relations.
    Mixed,
    /// `pg_catalog` objects and no user relation (a client's metadata query).
    Only,
}

/// Whose a relation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    PgCatalog,
    InformationSchema,
    User,
}

/// Counts a statement's `pg_catalog` and user relations.
#[derive(Default)]
struct RelationCensus {
    catalog: usize,
    user: usize,
    /// The next relation name is a table function's (`generate_series(1, 3)`), which reads
    /// neither user tables nor the catalog.
    in_table_function: bool,
}

fn owner(name: &ObjectName) -> Owner {
    let parts: Vec<&str> = name
        .0
        .iter()
        .filter_map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i.value.as_str()),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        // Postgres searches pg_catalog before the user's schemas for unqualified names.
        [table]
            if PG_CATALOG_TABLES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(table)) =>
        {
            Owner::PgCatalog
        }
        [.., schema, _] if schema.eq_ignore_ascii_case(PG_CATALOG) => Owner::PgCatalog,
        [.., schema, _] if schema.eq_ignore_ascii_case(INFORMATION_SCHEMA) => {
            Owner::InformationSchema
        }
        _ => Owner::User,
    }
}

fn is_oid_alias_type(t: &DataType) -> bool {
    match t {
        DataType::Regclass => true,
        DataType::Custom(name, _) => name.0.last().is_some_and(|p| match p {
            ObjectNamePart::Identifier(i) => OID_ALIAS_TYPES
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&i.value)),
            _ => false,
        }),
        _ => false,
    }
}

impl Visitor for RelationCensus {
    type Break = ();

    fn pre_visit_table_factor(&mut self, table_factor: &TableFactor) -> ControlFlow<()> {
        self.in_table_function = matches!(table_factor, TableFactor::Table { args: Some(_), .. });
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.in_table_function) {
            return ControlFlow::Continue(());
        }
        match owner(relation) {
            Owner::PgCatalog => self.catalog += 1,
            Owner::InformationSchema => {}
            Owner::User => self.user += 1,
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Cast { data_type, .. } = expr
            && is_oid_alias_type(data_type)
        {
            self.catalog += 1;
        }
        ControlFlow::Continue(())
    }
}

/// What `stmt` reads of the system catalog (see the module docs).
pub(crate) fn catalog_use(stmt: &Statement) -> CatalogUse {
    let mut census = RelationCensus::default();
    let _ = stmt.visit(&mut census);
    match (census.catalog, census.user) {
        (0, _) => CatalogUse::None,
        (_, 0) => CatalogUse::Only,
        _ => CatalogUse::Mixed,
    }
}

/// Whether `stmt` casts a literal to `regproc` (pgjdbc's and DBeaver's type queries).
fn casts_to_regproc(stmt: &Statement) -> bool {
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Cast { data_type, .. } = expr
                && syntax::is_regproc(data_type)
            {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder(false);
    let _ = stmt.visit(&mut f);
    f.0
}

/// datafusion-pg-catalog's rewriter, and the subset of its rules that keep a query's meaning.
pub(crate) struct PgCompat {
    full: PostgresCompatibilityParser,
    /// Every rule but `RemoveSubqueryFromProjection`, which replaces correlated scalar
    /// subqueries in select lists with NULL.
    safe_rules: Vec<Arc<dyn SqlStatementRewriteRule>>,
}

impl std::fmt::Debug for PgCompat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCompat").finish_non_exhaustive()
    }
}

impl PgCompat {
    pub(crate) fn new() -> Self {
        Self {
            full: PostgresCompatibilityParser::new(),
            safe_rules: vec![
                Arc::new(AliasDuplicatedProjectionRewrite),
                Arc::new(ResolveUnqualifiedIdentifier),
                Arc::new(RewriteArrayAnyAllOperation),
                Arc::new(PrependUnqualifiedPgTableName),
                Arc::new(StripCallableQualifier),
                Arc::new(FixArrayLiteral),
                Arc::new(CurrentUserVariableToSessionUserFunctionCall),
                Arc::new(StripCollate),
                Arc::new(RewritePgCatalogOperator),
                Arc::new(RewriteRegCastToSubquery::new()),
                Arc::new(FixVersionColumnName),
            ],
        }
    }

    /// Rewrite one parsed statement for DataFusion. `text` is the statement's own source text:
    /// datafusion-pg-catalog matches the known client queries it replaces wholesale on their
    /// tokens, and offers that only through its parser, so a catalog-only statement is handed
    /// to it once more; the result is taken when it is still one statement.
    pub(crate) fn rewrite(&self, stmt: Statement, text: &str) -> Statement {
        match catalog_use(&stmt) {
            CatalogUse::Only => {
                if casts_to_regproc(&stmt) {
                    // `'f'::regproc` must become a name before the rules turn it into an oid
                    // lookup; such statements match none of the whole-query replacements.
                    let mut stmt = stmt;
                    syntax::rewrite_regproc_literals(&mut stmt);
                    return self.full.rewrite(stmt);
                }
                match self.full.parse(text) {
                    Ok(mut v) if v.len() == 1 => v.remove(0),
                    _ => self.full.rewrite(stmt),
                }
            }
            CatalogUse::None | CatalogUse::Mixed => self.apply_safe_rules(stmt),
        }
    }

    /// For text DataFusion's parser refused: the library's whole-query replacements may turn
    /// a known client query into one it parses (`ABORT` → `ROLLBACK` as well). Taken only when
    /// every statement it yields is a catalog-only query or a transaction command.
    pub(crate) fn rescue(&self, text: &str) -> Option<Vec<Statement>> {
        let stmts = self.full.parse(text).ok()?;
        let acceptable = |s: &Statement| {
            matches!(s, Statement::Rollback { .. }) || catalog_use(s) == CatalogUse::Only
        };
        (!stmts.is_empty() && stmts.iter().all(acceptable)).then_some(stmts)
    }

    fn apply_safe_rules(&self, mut stmt: Statement) -> Statement {
        for rule in &self.safe_rules {
            stmt = rule.rewrite(stmt);
        }
        stmt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0)
    }

    #[test]
    fn catalog_use_follows_relations_not_names() {
        let cases = [
            ("SELECT relname FROM pg_class", CatalogUse::Only),
            ("SELECT * FROM pg_catalog.pg_namespace n", CatalogUse::Only),
            (
                "SELECT * FROM information_schema.tables WHERE table_schema = 'public'",
                CatalogUse::None,
            ),
            (
                "SELECT * FROM information_schema.columns c JOIN pg_catalog.pg_type t ON true",
                CatalogUse::Only,
            ),
            ("SELECT 't'::regclass", CatalogUse::Only),
            (
                "SELECT * FROM pg_catalog.pg_type t JOIN generate_series(1, 3) AS s(r) ON true",
                CatalogUse::Only,
            ),
            ("SELECT * FROM generate_series(1, 3)", CatalogUse::None),
            ("SELECT * FROM pg_events", CatalogUse::None),
            (
                "SELECT id, (SELECT max(v) FROM pg_events e2 WHERE e2.id = e.id) FROM pg_events e",
                CatalogUse::None,
            ),
            ("SELECT pg_score FROM events", CatalogUse::None),
            ("SELECT 'pg_class' AS x", CatalogUse::None),
            (
                "SELECT * FROM events e JOIN pg_catalog.pg_class c ON true",
                CatalogUse::Mixed,
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(catalog_use(&parse(sql)), want, "{sql}");
        }
    }

    #[test]
    fn user_queries_keep_correlated_subqueries() {
        let compat = PgCompat::new();
        let sql =
            "SELECT id, (SELECT max(v) FROM pg_events e2 WHERE e2.id = e.id) FROM pg_events e";
        let out = compat.rewrite(parse(sql), sql).to_string();
        assert!(out.contains("max(v)"), "{out}");
        assert!(!out.to_ascii_uppercase().contains("LIMIT 1"), "{out}");
    }

    #[test]
    fn rescue_takes_only_catalog_queries() {
        let compat = PgCompat::new();
        assert!(compat.rescue("ABORT").is_some());
        assert!(compat.rescue("SELECT FROM WHERE").is_none());
    }
}
