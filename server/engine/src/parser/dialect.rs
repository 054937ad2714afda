//! The SQL dialect prognos parses: PostgreSQL's, plus `TABLE name` as an argument.
//!
//! `PREDICT('m', TABLE t)`, `FORECAST(TABLE t, ...)` and friends take a relation. sqlparser
//! reads `TABLE t` only as a whole query, not inside an argument list, so this dialect reads
//! `TABLE name` where an expression starts as the subquery `(SELECT * FROM name)`. In
//! PostgreSQL `TABLE` is a reserved word that can never start an expression, so no statement
//! PostgreSQL accepts changes meaning. Everything else is PostgreSQL's dialect: each method it
//! overrides is forwarded, and [`Dialect::dialect`] reports PostgreSQL's type, so the parser's
//! own PostgreSQL checks (`dialect_of!`) still apply.

use std::cell::Cell;
use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Query, SetExpr, TableFactor, Value};
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::{Keyword, RESERVED_FOR_COLUMN_ALIAS};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// PostgreSQL's dialect with `TABLE name` arguments (see the module docs), and optionally `?`
/// placeholders.
#[derive(Debug, Default, Clone)]
pub struct PrognosDialect(PostgreSqlDialect, Option<Cell<usize>>);

impl PrognosDialect {
    /// The dialect that also reads `?` as a query parameter, numbered `$1, $2, …` in the order
    /// they appear (Flight SQL and JDBC-style clients write parameters so). In PostgreSQL `?`
    /// is an operator, never the start of an expression, so nothing PostgreSQL accepts changes
    /// meaning.
    pub fn with_question_mark_placeholders() -> Self {
        Self(PostgreSqlDialect {}, Some(Cell::new(0)))
    }
}

/// One whole SQL expression (a stored gate or live rule), parsed with the dialect statements
/// are parsed with; text after it is an error.
pub(crate) fn one_expr(text: &str) -> Result<datafusion::sql::sqlparser::ast::Expr, ParserError> {
    let dialect = PrognosDialect::default();
    let mut p = Parser::new(&dialect).try_with_sql(text)?;
    let e = p.parse_expr()?;
    p.expect_token(&Token::EOF)?;
    Ok(e)
}

/// One whole query (a stored outcomes query), parsed with the dialect statements are parsed
/// with; text after it is an error.
pub(crate) fn one_query(text: &str) -> Result<Query, ParserError> {
    let dialect = PrognosDialect::default();
    let mut p = Parser::new(&dialect).try_with_sql(text)?;
    let q = p.parse_query()?;
    p.expect_token(&Token::EOF)?;
    Ok(*q)
}

/// `SELECT * FROM t`, parsed once; [`select_all_from`] puts the real name in.
static SELECT_ALL: LazyLock<Option<Query>> = LazyLock::new(|| {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql("SELECT * FROM t")
        .and_then(|mut p| p.parse_query())
        .ok()
        .map(|q| *q)
});

/// The query `SELECT * FROM name` as a syntax tree.
pub(crate) fn select_all_from(name: ObjectName) -> Result<Query, ParserError> {
    let mut q = SELECT_ALL
        .clone()
        .ok_or_else(|| ParserError::ParserError("SELECT * template does not parse".into()))?;
    if let SetExpr::Select(select) = q.body.as_mut()
        && let Some(from) = select.from.first_mut()
        && let TableFactor::Table { name: n, .. } = &mut from.relation
    {
        *n = name;
        return Ok(q);
    }
    Err(ParserError::ParserError(
        "SELECT * template has no table".into(),
    ))
}

impl Dialect for PrognosDialect {
    fn dialect(&self) -> std::any::TypeId {
        self.0.dialect()
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        // `TABLE FROM t` keeps sqlparser's reading (a column named `table`).
        let names_relation = |t: &Token| match t {
            Token::Word(w) => {
                w.quote_style.is_some() || !RESERVED_FOR_COLUMN_ALIAS.contains(&w.keyword)
            }
            _ => false,
        };
        if parser.peek_keyword(Keyword::TABLE)
            && names_relation(&parser.peek_nth_token_ref(1).token)
        {
            parser.next_token();
            return Some(
                parser
                    .parse_object_name(false)
                    .and_then(select_all_from)
                    .map(|q| Expr::Subquery(Box::new(q))),
            );
        }
        if let Some(count) = &self.1
            && (matches!(&parser.peek_token_ref().token, Token::Question)
                || matches!(&parser.peek_token_ref().token, Token::Placeholder(p) if p == "?"))
        {
            parser.next_token();
            count.set(count.get() + 1);
            return Some(Ok(Expr::value(Value::Placeholder(format!(
                "${}",
                count.get()
            )))));
        }
        self.0.parse_prefix(parser)
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.0.identifier_quote_style(identifier)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }

    fn supports_unicode_string_literal(&self) -> bool {
        self.0.supports_unicode_string_literal()
    }

    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        self.0.is_reserved_for_identifier(kw)
    }

    fn is_custom_operator_part(&self, ch: char) -> bool {
        self.0.is_custom_operator_part(ch)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.0.get_next_precedence(parser)
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        self.0.supports_filter_during_aggregation()
    }

    fn supports_group_by_expr(&self) -> bool {
        self.0.supports_group_by_expr()
    }

    fn prec_value(&self, prec: Precedence) -> u8 {
        self.0.prec_value(prec)
    }

    fn allow_extract_custom(&self) -> bool {
        self.0.allow_extract_custom()
    }

    fn allow_extract_single_quotes(&self) -> bool {
        self.0.allow_extract_single_quotes()
    }

    fn supports_create_index_with_clause(&self) -> bool {
        self.0.supports_create_index_with_clause()
    }

    fn supports_explain_with_utility_options(&self) -> bool {
        self.0.supports_explain_with_utility_options()
    }

    fn supports_listen_notify(&self) -> bool {
        self.0.supports_listen_notify()
    }

    fn supports_factorial_operator(&self) -> bool {
        self.0.supports_factorial_operator()
    }

    fn supports_bitwise_shift_operators(&self) -> bool {
        self.0.supports_bitwise_shift_operators()
    }

    fn supports_comment_on(&self) -> bool {
        self.0.supports_comment_on()
    }

    fn supports_load_extension(&self) -> bool {
        self.0.supports_load_extension()
    }

    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        self.0.supports_named_fn_args_with_colon_operator()
    }

    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        self.0.supports_named_fn_args_with_expr_name()
    }

    fn supports_empty_projections(&self) -> bool {
        self.0.supports_empty_projections()
    }

    fn supports_nested_comments(&self) -> bool {
        self.0.supports_nested_comments()
    }

    fn supports_string_escape_constant(&self) -> bool {
        self.0.supports_string_escape_constant()
    }

    fn supports_numeric_literal_underscores(&self) -> bool {
        self.0.supports_numeric_literal_underscores()
    }

    fn supports_array_typedef_with_brackets(&self) -> bool {
        self.0.supports_array_typedef_with_brackets()
    }

    fn supports_geometric_types(&self) -> bool {
        self.0.supports_geometric_types()
    }

    fn supports_set_names(&self) -> bool {
        self.0.supports_set_names()
    }

    fn supports_alter_column_type_using(&self) -> bool {
        self.0.supports_alter_column_type_using()
    }

    fn supports_notnull_operator(&self) -> bool {
        self.0.supports_notnull_operator()
    }

    fn supports_interval_options(&self) -> bool {
        self.0.supports_interval_options()
    }

    fn supports_insert_table_alias(&self) -> bool {
        self.0.supports_insert_table_alias()
    }

    fn supports_create_table_like_parenthesized(&self) -> bool {
        self.0.supports_create_table_like_parenthesized()
    }

    fn supports_select_wildcard_with_alias(&self) -> bool {
        self.0.supports_select_wildcard_with_alias()
    }

    fn supports_comma_separated_trim(&self) -> bool {
        self.0.supports_comma_separated_trim()
    }

    fn supports_xml_expressions(&self) -> bool {
        self.0.supports_xml_expressions()
    }

    fn supports_comment_optimizer_hint(&self) -> bool {
        self.0.supports_comment_optimizer_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statements that exercise PostgreSQL's dialect settings parse the same way here.
    #[test]
    fn postgres_statements_parse_as_in_postgres_dialect() {
        let cases = [
            "SELECT a::int, b ->> 'k', c @> d, e ~ 'x', f !~* 'y', 5 !, 1 << 2, x NOTNULL FROM t",
            "SELECT count(*) FILTER (WHERE a > 1), U&'\\0041', E'a\\nb', 1_000 FROM \"T\"",
            "SELECT EXTRACT(EPOCH FROM ts), INTERVAL '1 day' FROM t GROUP BY 1",
            "EXPLAIN (ANALYZE, VERBOSE) SELECT 1",
            "SELECT * FROM pg_catalog.pg_class c WHERE c.relname ~ '^(t)$' COLLATE pg_catalog.default",
            "SELECT $1, $2::text, ARRAY[1,2][1], x[1:2] FROM t /* a /* nested */ comment */",
            "SET search_path TO public; SET NAMES 'UTF8'",
            "COMMENT ON TABLE t IS 'x'",
            "SELECT f(a => 1, b => 2)",
        ];
        for sql in cases {
            let ours = Parser::parse_sql(&PrognosDialect::default(), sql).map(|v| format!("{v:?}"));
            let theirs = Parser::parse_sql(&PostgreSqlDialect {}, sql).map(|v| format!("{v:?}"));
            assert!(theirs.is_ok(), "{sql}: {theirs:?}");
            assert_eq!(ours.ok(), theirs.ok(), "{sql}");
        }
    }

    #[test]
    fn question_marks_are_numbered_placeholders_when_asked_for() {
        let sql = "SELECT a FROM t WHERE a = ? AND b = '?' AND c > ? LIMIT ?";
        let stmt = Parser::parse_sql(&PrognosDialect::with_question_mark_placeholders(), sql)
            .expect("parses");
        assert_eq!(
            stmt[0].to_string(),
            "SELECT a FROM t WHERE a = $1 AND b = '?' AND c > $2 LIMIT $3"
        );
        assert!(Parser::parse_sql(&PrognosDialect::default(), sql).is_err());
    }

    #[test]
    fn table_arguments_become_subqueries() {
        let stmt = Parser::parse_sql(
            &PrognosDialect::default(),
            "SELECT * FROM FORECAST(TABLE s.sales, time => 'day')",
        )
        .expect("parses");
        assert_eq!(
            stmt[0].to_string(),
            "SELECT * FROM FORECAST((SELECT * FROM s.sales), time => 'day')"
        );
        // `TABLE` without a name is read as PostgreSQL's dialect reads it.
        for sql in [
            "SELECT table FROM t",
            "TABLE t",
            "SELECT * FROM t WHERE a IN (TABLE u)",
        ] {
            let ours = Parser::parse_sql(&PrognosDialect::default(), sql).map(|v| format!("{v:?}"));
            let theirs = Parser::parse_sql(&PostgreSqlDialect {}, sql).map(|v| format!("{v:?}"));
            assert_eq!(ours.ok(), theirs.ok(), "{sql}");
        }
    }
}
