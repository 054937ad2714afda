//! The one SQL front door: text becomes a list of [`ParsedStatement`]s, once.
//!
//! The text is tokenised once ([`PrognosDialect`]: PostgreSQL's dialect plus `TABLE name`
//! arguments), checked for nesting the planner could not survive ([`limits`]), and read by
//! DataFusion's [`DFParser`] — which knows `CREATE EXTERNAL TABLE`, `COPY … TO 'file' STORED
//! AS`, `EXPLAIN` — with the statements prognos adds read from the same token stream:
//!
//! * model statements (`CREATE [OR REPLACE] MODEL`, `ALTER MODEL`, `RETRAIN MODEL`, `DROP MODEL`, `SHOW MODELS`,
//!   `DESCRIBE MODEL`, `EXPORT MODEL`), parsed by [`crate::model_sql`] with the `AS` query kept as a tree;
//! * role statements (`CREATE / ALTER / DROP ROLE | USER`), parsed by [`crate::role_sql`];
//! * PostgreSQL's `COPY … TO 'file' [WITH] (FORMAT parquet, HEADER, …)`, read into DataFusion's
//!   `COPY … TO` statement ([`copy_options`]);
//! * PostgreSQL's `COPY … FROM STDIN` / `TO STDOUT`, which DataFusion's parser refuses;
//! * `BACKUP TO 'folder'` ([`crate::backup`]).
//!
//! Each statement keeps its own source text (for display, the registry, and the Postgres
//! compatibility layer's whole-query matches).

mod copy_options;
pub mod dialect;
pub(crate) mod limits;

use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{CopyTarget, Statement as SqlStatement};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

pub use dialect::PrognosDialect;

use crate::error::{EngineError, EngineResult};
use crate::model_sql::{self, ModelStatement};
use crate::role_sql::{self, RoleStatement};

/// A statement as parsed, before the engine's rewrites.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// Anything DataFusion's parser reads, and PostgreSQL's `COPY`.
    Sql(DFStatement),
    /// A model statement.
    Model(ModelStatement),
    /// A role statement.
    Role(RoleStatement),
    /// `BACKUP TO 'folder'`.
    Backup(String),
}

/// One statement of a script with its source text.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    /// The statement.
    pub statement: Parsed,
    /// Its text in the script (without the separating semicolon).
    pub text: String,
}

/// Byte offset of a tokenizer location (1-based line and character column) in `sql`.
pub(crate) fn byte_offset(sql: &str, loc: Location) -> usize {
    let mut offset = 0;
    for (i, line) in sql.split_inclusive('\n').enumerate() {
        if i + 1 == loc.line as usize {
            return offset
                + line
                    .char_indices()
                    .nth((loc.column as usize).saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(line.len());
        }
        offset += line.len();
    }
    sql.len()
}

/// A parser error as the engine reports it (a syntax error, 42601).
pub(crate) fn sql_error(e: ParserError) -> EngineError {
    EngineError::DataFusion(datafusion::error::DataFusionError::SQL(Box::new(e), None))
}

/// How [`parse_with`] reads the text.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// Read `?` as a query parameter (`$1, $2, …` in order), as Flight SQL clients write them.
    pub question_mark_placeholders: bool,
}

/// Parse a script of `;`-separated statements.
pub fn parse(sql: &str) -> EngineResult<Vec<ParsedStatement>> {
    parse_with(sql, ParseOptions::default())
}

/// Parse a script of `;`-separated statements with `options`.
pub fn parse_with(sql: &str, options: ParseOptions) -> EngineResult<Vec<ParsedStatement>> {
    let dialect = if options.question_mark_placeholders {
        PrognosDialect::with_question_mark_placeholders()
    } else {
        PrognosDialect::default()
    };
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|e| sql_error(ParserError::TokenizerError(e.to_string())))?;
    limits::check_complexity(tokens.iter().map(|t| &t.token))?;
    let mut parser = DFParserBuilder::new(tokens)
        .with_dialect(&dialect)
        .build()
        .map_err(EngineError::DataFusion)?;
    let mut out = vec![];
    let mut expecting_delimiter = false;
    loop {
        while parser.parser.consume_token(&Token::SemiColon) {
            expecting_delimiter = false;
        }
        let next = parser.parser.peek_token_ref();
        if next.token == Token::EOF {
            break;
        }
        if expecting_delimiter {
            return Err(sql_error(ParserError::ParserError(format!(
                "Expected: end of statement, found: {}",
                next.token
            ))));
        }
        let start = next.span.start;
        let statement = parse_statement(&mut parser, sql)?;
        let end = parser.parser.get_current_token().span.end;
        out.push(ParsedStatement {
            statement,
            text: sql[byte_offset(sql, start)..byte_offset(sql, end)].to_string(),
        });
        expecting_delimiter = true;
    }
    Ok(out)
}

/// The next `n` significant tokens.
fn peek_words(parser: &DFParser<'_>, n: usize) -> Vec<Token> {
    (0..n)
        .map(|i| parser.parser.peek_nth_token_ref(i).token.clone())
        .collect()
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

fn starts_model_statement(words: &[Token]) -> bool {
    let at = |i: usize, s: &str| words.get(i).is_some_and(|t| is_word(t, s));
    (at(0, "create") && (at(1, "model") || at(1, "or") && at(2, "replace") && at(3, "model")))
        || (at(0, "drop") || at(0, "alter")) && at(1, "model")
        || at(0, "show") && at(1, "models")
        || (at(0, "describe") || at(0, "desc")) && at(1, "model")
        || at(0, "export") && at(1, "model")
        || at(0, "retrain") && at(1, "model")
}

/// `BACKUP TO 'folder'`: the folder.
fn parse_backup(p: &mut datafusion::sql::sqlparser::parser::Parser<'_>) -> EngineResult<String> {
    p.next_token();
    p.expect_keyword(Keyword::TO).map_err(sql_error)?;
    let folder = p.parse_literal_string().map_err(sql_error)?;
    if !at_statement_end(p) {
        return Err(sql_error(ParserError::ParserError(format!(
            "Expected: end of BACKUP statement, found: {}",
            p.peek_token_ref().token
        ))));
    }
    Ok(folder)
}

/// Whether the parser stands at the end of a statement.
fn at_statement_end(p: &datafusion::sql::sqlparser::parser::Parser<'_>) -> bool {
    matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon)
}

fn parse_statement(parser: &mut DFParser<'_>, sql: &str) -> EngineResult<Parsed> {
    let words = peek_words(parser, 4);
    if starts_model_statement(&words) {
        return model_sql::parse(&mut parser.parser, sql).map(Parsed::Model);
    }
    if role_sql::starts_role_statement(|i, s| words.get(i).is_some_and(|t| is_word(t, s))) {
        return role_sql::parse(&mut parser.parser).map(Parsed::Role);
    }
    if words.first().is_some_and(|t| is_word(t, "backup")) {
        return parse_backup(&mut parser.parser).map(Parsed::Backup);
    }
    if words
        .first()
        .is_some_and(|t| matches!(t, Token::Word(w) if w.keyword == Keyword::COPY))
    {
        // PostgreSQL's option list for a file target.
        if let Some(copy) = parser
            .parser
            .maybe_parse(copy_options::parse_copy_to_file)
            .map_err(sql_error)?
        {
            return Ok(Parsed::Sql(DFStatement::CopyTo(copy)));
        }
        // PostgreSQL's COPY with the client (FROM STDIN, TO STDOUT) or a server-side load.
        if let Some(copy) = parser
            .parser
            .maybe_parse(|p| {
                let s = p.parse_statement()?;
                let client_copy = matches!(
                    &s,
                    SqlStatement::Copy { to, target, .. }
                        if !(*to && matches!(target, CopyTarget::File { .. }))
                );
                if client_copy && at_statement_end(p) {
                    Ok(s)
                } else {
                    Err(ParserError::ParserError("not a client COPY".into()))
                }
            })
            .map_err(sql_error)?
        {
            return Ok(Parsed::Sql(DFStatement::Statement(Box::new(copy))));
        }
    }
    parser
        .parse_statement()
        .map(Parsed::Sql)
        .map_err(EngineError::DataFusion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_into_statements_with_their_text() {
        let stmts = parse("SELECT ';'; DROP MODEL IF EXISTS m;\n SHOW MODELS ; ").expect("parse");
        assert_eq!(stmts.len(), 3);
        assert_eq!(stmts[0].text, "SELECT ';'");
        assert!(matches!(stmts[0].statement, Parsed::Sql(_)));
        assert!(matches!(
            &stmts[1].statement,
            Parsed::Model(ModelStatement::Drop { name, if_exists: true, version: None }) if name == "m"
        ));
        assert_eq!(stmts[1].text, "DROP MODEL IF EXISTS m");
        assert!(matches!(
            stmts[2].statement,
            Parsed::Model(ModelStatement::Show)
        ));
        assert_eq!(stmts[2].text, "SHOW MODELS");
    }

    #[test]
    fn copy_forms_are_read_by_the_parser() {
        let stmts = parse(
            "COPY t TO '/tmp/x.csv' (FORMAT csv, HEADER true); \
             COPY (SELECT 1) TO 'a.parquet' WITH (format parquet); \
             COPY t TO 'b.parquet' STORED AS PARQUET; \
             COPY (SELECT 1) TO STDOUT; \
             COPY t (a, b) FROM STDIN WITH (FORMAT csv)",
        )
        .expect("parse");
        let kinds: Vec<String> = stmts
            .iter()
            .map(|s| match &s.statement {
                Parsed::Sql(DFStatement::CopyTo(c)) => format!("copy_to {c}"),
                Parsed::Sql(DFStatement::Statement(b)) => format!("pg {b}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "copy_to COPY t TO /tmp/x.csv STORED AS CSV OPTIONS ('format.has_header' 'true')",
                "copy_to COPY (SELECT 1) TO a.parquet STORED AS PARQUET",
                "copy_to COPY t TO b.parquet STORED AS PARQUET",
                "pg COPY (SELECT 1) TO STDOUT",
                "pg COPY t (a, b) FROM STDIN (FORMAT csv)",
            ]
        );
    }

    #[test]
    fn syntax_errors_stay_syntax_errors() {
        for sql in [
            "SELEC 1",
            "SELECT 1 +",
            "SELECT 1 SELECT 2",
            "COPY t TO",
            "CREATE MODEL",
        ] {
            let e = parse(sql).expect_err(sql);
            assert_eq!(
                e.status(),
                crate::error::StatusCode::SyntaxError,
                "{sql}: {e}"
            );
        }
    }
}
