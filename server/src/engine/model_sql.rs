//! The model statements DataFusion's parser does not know, parsed here:
//!
//! ```sql
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name
//!   [PREDICT target] [USING algorithm] [WITH (key = value, ...)]
//!   AS <query>
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name
//!   DETECT ANOMALIES [USING isolation_forest] [WITH (key = value, ...)] AS <query>
//! CREATE [OR REPLACE] MODEL [IF NOT EXISTS] name
//!   FORECAST value TIME time [BY id [, ...]] [USING method] [WITH (key = value, ...)]
//!   AS <query>
//! DROP MODEL [IF EXISTS] name
//! SHOW MODELS
//! DESCRIBE MODEL name          -- also DESC MODEL
//! ```
//! Statements are split at top-level semicolons by sqlparser's tokenizer (so `;` in strings and
//! comments is ignored); the `AS` query keeps its original text for the registry.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::Ident;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::{ServerError, ServerResult, StatusCode};

/// A parsed model statement.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatement {
    /// `CREATE [OR REPLACE] MODEL`.
    Create {
        /// Model name (unquoted names lower-cased, as Postgres does).
        name: String,
        /// `OR REPLACE`: add a version to an existing model.
        replace: bool,
        /// `IF NOT EXISTS`: do nothing when it exists.
        if_not_exists: bool,
        /// `PREDICT <column>`.
        target: Option<String>,
        /// `FORECAST <value> TIME <time> [BY <ids>]`.
        forecast: Option<ForecastClause>,
        /// `DETECT ANOMALIES`.
        detect_anomalies: bool,
        /// `USING <algorithm>`.
        algorithm: Option<String>,
        /// `WITH (...)`, keys lower-cased.
        options: BTreeMap<String, String>,
        /// The training query's text.
        query: String,
    },
    /// `DROP MODEL`.
    Drop {
        /// Model name.
        name: String,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `SHOW MODELS`.
    Show,
    /// `DESCRIBE MODEL`.
    Describe {
        /// Model name.
        name: String,
    },
}

/// The series of a forecasting model.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastClause {
    /// `FORECAST <value>`.
    pub value: String,
    /// `TIME <column>`.
    pub time: String,
    /// `BY <column>, ...`.
    pub ids: Vec<String>,
}

fn syntax(msg: impl Into<String>) -> ServerError {
    ServerError::statement(StatusCode::SyntaxError, msg)
}

fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

/// Byte offset of a tokenizer location (1-based line and character column) in `sql`.
fn byte_offset(sql: &str, loc: Location) -> usize {
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

/// Whether `sql` may hold a model statement (a cheap test before tokenizing).
pub(super) fn may_contain_model_statement(sql: &str) -> bool {
    contains_ignore_case(sql, "model")
}

/// Whether `hay` contains the ASCII `needle` in any letter case, without allocating.
pub(super) fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.len() >= n.len()
        && hay
            .as_bytes()
            .windows(n.len())
            .any(|w| w.eq_ignore_ascii_case(n))
}

/// One statement of a script: its text and, for model statements, the parse.
#[derive(Debug)]
pub(super) enum Piece<'a> {
    Sql(&'a str),
    Model(ModelStatement),
}

fn leading_words(tokens: &[Token]) -> Vec<&Token> {
    tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .take(4)
        .collect()
}

fn is_model_statement(tokens: &[Token]) -> bool {
    let w = leading_words(tokens);
    let at = |i: usize, s: &str| w.get(i).is_some_and(|t| is_word(t, s));
    (at(0, "create") && (at(1, "model") || at(1, "or") && at(2, "replace") && at(3, "model")))
        || at(0, "drop") && at(1, "model")
        || at(0, "show") && at(1, "models")
        || (at(0, "describe") || at(0, "desc")) && at(1, "model")
}

/// Split a script into statements, parsing the model statements. `None` when the script has
/// no model statement (the caller parses it as usual).
pub(super) fn split_script(sql: &str) -> ServerResult<Option<Vec<Piece<'_>>>> {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return Ok(None);
    };
    let mut pieces = vec![];
    let mut any_model = false;
    let mut start_tok = 0;
    let mut start_byte = 0;
    let mut bounds = vec![];
    for (i, t) in tokens.iter().enumerate() {
        if t.token == Token::SemiColon {
            let end = byte_offset(sql, t.span.start);
            bounds.push((start_tok, i, start_byte, end));
            start_tok = i + 1;
            start_byte = byte_offset(sql, t.span.end);
        }
    }
    bounds.push((start_tok, tokens.len(), start_byte, sql.len()));
    for (a, b, sb, eb) in bounds {
        let toks: Vec<Token> = tokens[a..b].iter().map(|t| t.token.clone()).collect();
        let text = &sql[sb..eb];
        if toks.iter().all(|t| matches!(t, Token::Whitespace(_))) {
            continue;
        }
        if is_model_statement(&toks) {
            any_model = true;
            pieces.push(Piece::Model(parse_model_statement(text)?));
        } else {
            pieces.push(Piece::Sql(text));
        }
    }
    Ok(any_model.then_some(pieces))
}

fn expect_word(p: &mut Parser<'_>, w: &str) -> ServerResult<()> {
    let t = p.next_token();
    if is_word(&t.token, w) {
        Ok(())
    } else {
        Err(syntax(format!(
            "syntax error at or near \"{}\": expected {}",
            t.token,
            w.to_ascii_uppercase()
        )))
    }
}

fn parse_err(e: impl std::fmt::Display) -> ServerError {
    syntax(e.to_string())
}

/// Parse one model statement.
pub fn parse_model_statement(text: &str) -> ServerResult<ModelStatement> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(parse_err)?;
    let first = p.next_token();
    if is_word(&first.token, "show") {
        expect_word(&mut p, "models")?;
        return finish(&mut p, ModelStatement::Show);
    }
    if is_word(&first.token, "describe") || is_word(&first.token, "desc") {
        expect_word(&mut p, "model")?;
        let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
        return finish(&mut p, ModelStatement::Describe { name });
    }
    if is_word(&first.token, "drop") {
        expect_word(&mut p, "model")?;
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
        return finish(&mut p, ModelStatement::Drop { name, if_exists });
    }
    // CREATE [OR REPLACE] MODEL
    let replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    expect_word(&mut p, "model")?;
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = ident_name(&p.parse_identifier().map_err(parse_err)?);
    let (mut target, mut algorithm, mut options) = (None, None, BTreeMap::new());
    let (mut value, mut time, mut ids) = (None, None, vec![]);
    let mut detect_anomalies = false;
    loop {
        let t = p.peek_token();
        if is_word(&t.token, "detect") {
            p.next_token();
            expect_word(&mut p, "anomalies")?;
            detect_anomalies = true;
        } else if is_word(&t.token, "predict") {
            p.next_token();
            target = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if is_word(&t.token, "forecast") {
            p.next_token();
            value = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if is_word(&t.token, "time") {
            p.next_token();
            time = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if p.parse_keyword(Keyword::BY) {
            loop {
                ids.push(ident_name(&p.parse_identifier().map_err(parse_err)?));
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
        } else if p.parse_keyword(Keyword::USING) {
            algorithm = Some(ident_name(&p.parse_identifier().map_err(parse_err)?));
        } else if p.parse_keyword(Keyword::WITH) {
            p.expect_token(&Token::LParen).map_err(parse_err)?;
            loop {
                let key = ident_name(&p.parse_identifier().map_err(parse_err)?);
                p.expect_token(&Token::Eq).map_err(parse_err)?;
                let v = p.parse_expr().map_err(parse_err)?;
                let value = match v {
                    datafusion::sql::sqlparser::ast::Expr::Value(v) => match v.value {
                        datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) => s,
                        other => other.to_string(),
                    },
                    datafusion::sql::sqlparser::ast::Expr::Identifier(i) => i.value,
                    other => other.to_string(),
                };
                options.insert(key, value);
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.expect_token(&Token::RParen).map_err(parse_err)?;
        } else if p.parse_keyword(Keyword::AS) {
            break;
        } else {
            return Err(syntax(format!(
                "syntax error at or near \"{}\": expected PREDICT, FORECAST, TIME, BY, DETECT \
                 ANOMALIES, USING, WITH or AS",
                t.token
            )));
        }
    }
    let start = p.peek_token().span.start;
    if p.peek_token().token == Token::EOF {
        return Err(syntax("CREATE MODEL needs a training query after AS"));
    }
    let query = text[byte_offset(text, start)..].trim().to_string();
    let forecast = match (value, time) {
        (Some(value), Some(time)) => {
            if target.is_some() {
                return Err(syntax(
                    "a model either predicts a column (PREDICT) or forecasts one (FORECAST), \
                     not both",
                ));
            }
            Some(ForecastClause { value, time, ids })
        }
        (Some(_), None) => {
            return Err(syntax(
                "CREATE MODEL ... FORECAST needs the time column: FORECAST value TIME t",
            ));
        }
        (None, Some(_)) => return Err(syntax("TIME belongs to CREATE MODEL ... FORECAST")),
        (None, None) if !ids.is_empty() => {
            return Err(syntax("BY belongs to CREATE MODEL ... FORECAST"));
        }
        (None, None) => None,
    };
    if detect_anomalies && (target.is_some() || forecast.is_some()) {
        return Err(syntax(
            "DETECT ANOMALIES models score rows without a target: drop PREDICT / FORECAST",
        ));
    }
    Ok(ModelStatement::Create {
        name,
        replace,
        if_not_exists,
        target,
        forecast,
        detect_anomalies,
        algorithm,
        options,
        query,
    })
}

fn finish(p: &mut Parser<'_>, s: ModelStatement) -> ServerResult<ModelStatement> {
    let t = p.peek_token();
    if t.token == Token::EOF {
        Ok(s)
    } else {
        Err(syntax(format!("syntax error at or near \"{}\"", t.token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_model_keeps_query_text() {
        let s = parse_model_statement(
            "CREATE OR REPLACE MODEL Churn PREDICT churned USING gbdt \
             WITH (num_trees = 50, time_budget = '10s', task = classification)\n  AS SELECT a, \"B\" FROM t WHERE x = 'é;'",
        )
        .expect("parse");
        let ModelStatement::Create {
            name,
            replace,
            target,
            algorithm,
            options,
            query,
            ..
        } = s
        else {
            panic!("not create: {s:?}")
        };
        assert_eq!(name, "churn");
        assert!(replace);
        assert_eq!(target.as_deref(), Some("churned"));
        assert_eq!(algorithm.as_deref(), Some("gbdt"));
        assert_eq!(options["num_trees"], "50");
        assert_eq!(options["time_budget"], "10s");
        assert_eq!(options["task"], "classification");
        assert_eq!(query, "SELECT a, \"B\" FROM t WHERE x = 'é;'");
    }

    #[test]
    fn create_forecast_model_reads_its_series() {
        let s = parse_model_statement(
            "CREATE MODEL demand FORECAST Sales TIME day BY store, \"Region\" USING ets \
             WITH (horizon = 28) AS SELECT * FROM t",
        )
        .expect("parse");
        let ModelStatement::Create {
            forecast: Some(f),
            algorithm,
            options,
            ..
        } = s
        else {
            panic!("not a forecast model: {s:?}")
        };
        assert_eq!(f.value, "sales");
        assert_eq!(f.time, "day");
        assert_eq!(f.ids, vec!["store".to_string(), "Region".to_string()]);
        assert_eq!(algorithm.as_deref(), Some("ets"));
        assert_eq!(options["horizon"], "28");
    }

    #[test]
    fn scripts_split_at_top_level_semicolons() {
        let pieces = split_script("SELECT ';'; DROP MODEL IF EXISTS m; SHOW MODELS")
            .expect("split")
            .expect("has model statements");
        assert_eq!(pieces.len(), 3);
        assert!(matches!(pieces[0], Piece::Sql(s) if s.trim() == "SELECT ';'"));
        assert!(matches!(
            &pieces[1],
            Piece::Model(ModelStatement::Drop { name, if_exists: true }) if name == "m"
        ));
        assert!(matches!(pieces[2], Piece::Model(ModelStatement::Show)));
        assert!(
            split_script("SELECT model FROM t")
                .expect("split")
                .is_none()
        );
    }

    #[test]
    fn bad_model_statements_are_syntax_errors() {
        for sql in [
            "CREATE MODEL m PREDICT",
            "CREATE MODEL m USING gbdt",
            "CREATE MODEL m FOO AS SELECT 1",
            "DROP MODEL",
            "SHOW MODELS extra",
            "CREATE MODEL m FORECAST v AS SELECT 1",
            "CREATE MODEL m TIME t AS SELECT 1",
            "CREATE MODEL m BY s AS SELECT 1",
            "CREATE MODEL m PREDICT y FORECAST v TIME t AS SELECT 1",
            "CREATE MODEL m DETECT AS SELECT 1",
            "CREATE MODEL m DETECT ANOMALIES PREDICT y AS SELECT 1",
        ] {
            let e = parse_model_statement(sql).expect_err(sql);
            assert_eq!(e.status(), StatusCode::SyntaxError, "{sql}");
        }
    }
}
