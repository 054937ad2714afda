//! Masking-policy statements, read from the statement's tokens, and how they run:
//!
//! * `CREATE MASKING POLICY p ON t (c) USING redact | partial(k) | hash` — the table's owner
//!   (or a superuser) masks column `c` of `t` for every role without `UNMASK` on `t`;
//! * `DROP MASKING POLICY [IF EXISTS] p`.
//!
//! What the methods do is [`prognos_catalog::masking`]'s; where masking happens,
//! [`crate::masked_table`]'s.

use datafusion::common::TableReference;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use prognos_catalog::masking::{MaskMethod, MaskPolicy};

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_sql::ident_name;
use crate::parser::sql_error;
use crate::session::Session;
use crate::{Engine, Output};

/// A masking-policy statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskingStatement {
    /// `CREATE MASKING POLICY`.
    Create {
        /// Policy name.
        name: String,
        /// The table, as `(schema, name)`.
        table: (Option<String>, String),
        /// The masked column.
        column: String,
        /// How.
        method: MaskMethod,
    },
    /// `DROP MASKING POLICY`.
    Drop {
        /// Policy name.
        name: String,
        /// `IF EXISTS`.
        if_exists: bool,
    },
}

impl MaskingStatement {
    /// The command tag.
    pub fn tag(&self) -> &'static str {
        match self {
            MaskingStatement::Create { .. } => "CREATE MASKING POLICY",
            MaskingStatement::Drop { .. } => "DROP MASKING POLICY",
        }
    }
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

/// Whether the next words begin a masking-policy statement.
pub(crate) fn starts_masking_statement(at: &impl Fn(usize, &str) -> bool) -> bool {
    (at(0, "create") || at(0, "drop")) && at(1, "masking") && at(2, "policy")
}

fn syntax(msg: String) -> EngineError {
    sql_error(ParserError::ParserError(msg))
}

/// Parse one masking-policy statement; the parser stands on its first word.
pub(crate) fn parse(p: &mut Parser<'_>) -> EngineResult<MaskingStatement> {
    let create = p
        .expect_one_of_keywords(&[Keyword::CREATE, Keyword::DROP])
        .map_err(sql_error)?
        == Keyword::CREATE;
    for w in ["masking", "policy"] {
        let t = p.next_token();
        if !is_word(&t.token, w) {
            return Err(syntax(format!(
                "expected {}, found {}",
                w.to_uppercase(),
                t.token
            )));
        }
    }
    if !create {
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = ident_name(&p.parse_identifier().map_err(sql_error)?);
        return Ok(MaskingStatement::Drop { name, if_exists });
    }
    let name = ident_name(&p.parse_identifier().map_err(sql_error)?);
    p.expect_keyword(Keyword::ON).map_err(sql_error)?;
    let table = p.parse_object_name(false).map_err(sql_error)?;
    let parts: Vec<String> = table
        .0
        .iter()
        .map(|part| part.as_ident().map(ident_name))
        .collect::<Option<_>>()
        .ok_or_else(|| syntax(format!("invalid table name {table}")))?;
    let table = match parts.as_slice() {
        [t] => (None, t.clone()),
        [s, t] | [_, s, t] => (Some(s.clone()), t.clone()),
        _ => return Err(syntax(format!("invalid table name {table}"))),
    };
    p.expect_token(&Token::LParen).map_err(sql_error)?;
    let column = ident_name(&p.parse_identifier().map_err(sql_error)?);
    p.expect_token(&Token::RParen).map_err(sql_error)?;
    p.expect_keyword(Keyword::USING).map_err(sql_error)?;
    let t = p.next_token();
    let method = if is_word(&t.token, "redact") {
        MaskMethod::Redact
    } else if is_word(&t.token, "hash") {
        MaskMethod::Hash
    } else if is_word(&t.token, "partial") {
        p.expect_token(&Token::LParen).map_err(sql_error)?;
        let k = p.parse_literal_uint().map_err(sql_error)?;
        p.expect_token(&Token::RParen).map_err(sql_error)?;
        MaskMethod::Partial(usize::try_from(k).map_err(|_| {
            EngineError::statement(
                StatusCode::InvalidParameterValue,
                "partial(k): k is too large",
            )
        })?)
    } else {
        return Err(syntax(format!(
            "expected a masking method (redact, partial(k), hash), found {}",
            t.token
        )));
    };
    Ok(MaskingStatement::Create {
        name,
        table,
        column,
        method,
    })
}

/// Run a masking-policy statement.
pub(crate) async fn execute(
    engine: &Engine,
    session: &Session,
    stmt: &MaskingStatement,
) -> EngineResult<Output> {
    let p = engine.privileges(session);
    match stmt {
        MaskingStatement::Create {
            name,
            table,
            column,
            method,
        } => {
            let r = match &table.0 {
                Some(s) => TableReference::partial(s.as_str(), table.1.as_str()),
                None => TableReference::bare(table.1.as_str()),
            };
            let provider = session.ctx().table_provider(r.clone()).await.map_err(|_| {
                EngineError::statement(
                    StatusCode::UndefinedTable,
                    format!("relation \"{}\" does not exist", table.1),
                )
            })?;
            let object = crate::privileges::table_of(&r)?;
            crate::privileges::require_owner(&p, &object)?;
            let schema = provider.schema();
            let field = schema.field_with_name(column).map_err(|_| {
                EngineError::statement(
                    StatusCode::UndefinedColumn,
                    format!(
                        "column \"{column}\" of relation \"{}\" does not exist",
                        table.1
                    ),
                )
            })?;
            if let Some(why) = method.unsupported_for(field.data_type()) {
                return Err(EngineError::statement(StatusCode::DatatypeMismatch, why));
            }
            let policy = MaskPolicy {
                name: name.clone(),
                column: column.clone(),
                method: method.clone(),
            };
            let mut refused = None;
            engine.roles.update_acl(|acl, _| {
                if let Err(why) = acl.add_mask(object.clone(), policy) {
                    refused = Some(why);
                }
                Ok(())
            })?;
            if let Some(why) = refused {
                return Err(EngineError::statement(StatusCode::DuplicateObject, why));
            }
        }
        MaskingStatement::Drop { name, if_exists } => {
            let found = engine.roles.acl().mask_named(name);
            match found {
                None if *if_exists => {
                    session.notice(format!(
                        "masking policy \"{name}\" does not exist, skipping"
                    ));
                }
                None => {
                    return Err(EngineError::statement(
                        StatusCode::UndefinedObject,
                        format!("masking policy \"{name}\" does not exist"),
                    ));
                }
                Some((object, _)) => {
                    crate::privileges::require_owner(&p, &object)?;
                    engine.roles.update_acl(|acl, _| {
                        acl.drop_mask(name);
                        Ok(())
                    })?;
                }
            }
        }
    }
    // Plans made before read the table with the policies as they were.
    engine.bump_epoch();
    Ok(Output::Command {
        tag: stmt.tag().to_string(),
        rows: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::PrognosDialect;

    fn parse_one(sql: &str) -> EngineResult<MaskingStatement> {
        let dialect = PrognosDialect::default();
        let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(sql_error)?;
        parse(&mut p)
    }

    #[test]
    fn masking_statements_parse() {
        assert_eq!(
            parse_one("CREATE MASKING POLICY card_tail ON public.payments (Card) USING partial(4)")
                .expect("parse"),
            MaskingStatement::Create {
                name: "card_tail".into(),
                table: (Some("public".into()), "payments".into()),
                column: "card".into(),
                method: MaskMethod::Partial(4),
            }
        );
        assert_eq!(
            parse_one("create masking policy e on users (email) using HASH").expect("parse"),
            MaskingStatement::Create {
                name: "e".into(),
                table: (None, "users".into()),
                column: "email".into(),
                method: MaskMethod::Hash,
            }
        );
        assert_eq!(
            parse_one("DROP MASKING POLICY IF EXISTS e").expect("parse"),
            MaskingStatement::Drop {
                name: "e".into(),
                if_exists: true
            }
        );
        for bad in [
            "CREATE MASKING POLICY p ON t (c) USING scramble",
            "CREATE MASKING POLICY p ON t USING hash",
            "CREATE MASKING POLICY p ON t (c) USING partial(x)",
        ] {
            assert_eq!(
                parse_one(bad).expect_err(bad).status(),
                StatusCode::SyntaxError,
                "{bad}"
            );
        }
    }
}
