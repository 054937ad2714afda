//! PostgreSQL's `COPY <table | (query)> TO 'file' [WITH] (FORMAT parquet, HEADER true, …)`,
//! read into DataFusion's `COPY … TO 'file' STORED AS … OPTIONS (…)` statement.
//!
//! `FORMAT x` becomes `STORED AS X`; `HEADER`, `DELIMITER` and `COMPRESSION` become
//! DataFusion's `format.has_header`, `format.delimiter` and `format.compression`; other keys
//! pass through as they are (DataFusion names them, e.g. `'format.compression' 'zstd(3)'`). An
//! option without a value is `true`, as in PostgreSQL (`HEADER`).

use datafusion::sql::parser::{CopyToSource, CopyToStatement};
use datafusion::sql::sqlparser::ast::Value;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// Parse the statement at the parser (from `COPY`) in PostgreSQL's form with an option list
/// and a file target; an error for anything else (the caller then rewinds and tries the other
/// forms).
pub(super) fn parse_copy_to_file(p: &mut Parser<'_>) -> Result<CopyToStatement, ParserError> {
    p.expect_keyword(Keyword::COPY)?;
    let source = if p.consume_token(&Token::LParen) {
        let q = p.parse_query()?;
        p.expect_token(&Token::RParen)?;
        CopyToSource::Query(q)
    } else {
        CopyToSource::Relation(p.parse_object_name(true)?)
    };
    p.expect_keyword(Keyword::TO)?;
    let target = p.parse_literal_string()?;
    let _optional_with = p.parse_keyword(Keyword::WITH);
    p.expect_token(&Token::LParen)?;
    let mut stored_as = None;
    let mut options = vec![];
    loop {
        let key = match p.next_token().token {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            other => {
                return Err(ParserError::ParserError(format!(
                    "COPY option expected, found {other}"
                )));
            }
        };
        let value = match &p.peek_token_ref().token {
            Token::Comma | Token::RParen => "true".to_string(),
            _ => match p.next_token().token {
                Token::Word(w) => w.value,
                Token::SingleQuotedString(s) => s,
                Token::Number(n, _) => n,
                other => {
                    return Err(ParserError::ParserError(format!(
                        "COPY option value expected, found {other}"
                    )));
                }
            },
        };
        let key = match key.as_str() {
            "format" => {
                stored_as = Some(value.to_ascii_uppercase());
                None
            }
            "header" => Some("format.has_header".to_string()),
            "delimiter" => Some("format.delimiter".to_string()),
            "compression" => Some("format.compression".to_string()),
            _ => Some(key),
        };
        if let Some(key) = key {
            options.push((key, Value::SingleQuotedString(value)));
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen)?;
    if !matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon) {
        return Err(ParserError::ParserError("end of COPY expected".into()));
    }
    Ok(CopyToStatement {
        source,
        target,
        partitioned_by: vec![],
        stored_as,
        options,
    })
}
