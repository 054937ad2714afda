//! Guards against statements that would exhaust the stack while being parsed, planned or
//! dropped (the SQL parser and planner build deeply nested trees for long operator chains and
//! deep parentheses). Postgres answers such statements with SQLSTATE 54001; so does prognos.

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{EngineError, EngineResult, StatusCode};

/// Longest chain of binary operators allowed in one expression.
pub(crate) const MAX_OPERATOR_CHAIN: usize = 1000;
/// Deepest parenthesis nesting allowed.
pub(crate) const MAX_NESTING: usize = 200;

fn is_operator(t: &Token) -> bool {
    match t {
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::StringConcat
        | Token::Eq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Caret
        | Token::Ampersand
        | Token::Pipe => true,
        Token::Word(w) => w.value.eq_ignore_ascii_case("and") || w.value.eq_ignore_ascii_case("or"),
        _ => false,
    }
}

/// Reject statements nested too deeply to parse and plan safely, from the script's tokens.
pub(crate) fn check_complexity<'a>(
    tokens: impl IntoIterator<Item = &'a Token>,
) -> EngineResult<()> {
    // chain[d] = operators seen since the last separator at parenthesis depth d.
    let mut chain: Vec<usize> = vec![0];
    for t in tokens {
        match t {
            Token::LParen | Token::LBracket => {
                chain.push(0);
                if chain.len() > MAX_NESTING {
                    return Err(too_complex(format!(
                        "parentheses nested deeper than {MAX_NESTING} levels"
                    )));
                }
            }
            Token::RParen | Token::RBracket if chain.len() > 1 => {
                chain.pop();
            }
            Token::Comma | Token::SemiColon => {
                if let Some(c) = chain.last_mut() {
                    *c = 0;
                }
            }
            t if is_operator(t) => {
                if let Some(c) = chain.last_mut() {
                    *c += 1;
                    if *c > MAX_OPERATOR_CHAIN {
                        return Err(too_complex(format!(
                            "more than {MAX_OPERATOR_CHAIN} operators in one expression"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn too_complex(what: String) -> EngineError {
    EngineError::statement(
        StatusCode::StatementTooComplex,
        format!("statement too complex: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn check(sql: &str) -> EngineResult<()> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .expect("tokenizes");
        check_complexity(&tokens)
    }

    #[test]
    fn long_operator_chains_are_rejected() {
        let sql = format!("SELECT {} 1", "1 + ".repeat(MAX_OPERATOR_CHAIN + 1));
        let err = check(&sql).expect_err("too complex");
        assert_eq!(err.status(), StatusCode::StatementTooComplex);
        let deep = format!(
            "SELECT {}1{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert!(check(&deep).is_err());
    }

    #[test]
    fn big_but_flat_statements_pass() {
        let values: Vec<String> = (0..50_000)
            .map(|i| format!("({i}, -{i}, 'x' || 'y')"))
            .collect();
        let sql = format!("INSERT INTO t VALUES {}", values.join(", "));
        check(&sql).expect("flat VALUES list is fine");
        let in_list: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
        check(&format!(
            "SELECT * FROM t WHERE a IN ({})",
            in_list.join(",")
        ))
        .expect("IN list");
    }
}
