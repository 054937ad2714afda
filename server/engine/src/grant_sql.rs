//! `GRANT` and `REVOKE` as PostgreSQL writes them, plus prognos's model forms, read from the
//! statement's tokens:
//!
//! * `GRANT { SELECT | INSERT | UPDATE | DELETE | TRUNCATE } [, …] | ALL [PRIVILEGES]
//!   ON { [TABLE] t [, …] | ALL TABLES IN SCHEMA s [, …] } TO grantee [, …]`;
//! * `GRANT { CREATE | USAGE } [, …] | ALL ON SCHEMA s [, …] TO grantee [, …]`;
//! * `GRANT UNMASK ON [TABLE] t [, …] TO grantee [, …]`: the table's masked columns as they
//!   are (`ALL` does not include it);
//! * `GRANT USAGE | ALL ON MODEL m [, …] TO grantee [, …]` (PREDICT, FORECAST, ANOMALY,
//!   EVALUATE, DESCRIBE and EXPORT of the model);
//! * `GRANT CREATE MODEL TO grantee [, …]`;
//! * `GRANT role [, …] TO role [, …]` (membership: the members inherit the role's privileges);
//! * `REVOKE` of each, with `FROM` instead of `TO` (`CASCADE` / `RESTRICT` accepted).
//!
//! A grantee is a role name, `PUBLIC` or `CURRENT_USER`. Grant options (`WITH GRANT OPTION`,
//! `WITH ADMIN OPTION`, `GRANTED BY`) and column privileges are refused by name.

use datafusion::sql::sqlparser::ast::Ident;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use prognos_catalog::Privilege;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_sql::ident_name;
use crate::parser::sql_error;

/// Who receives (or loses) a privilege or membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// A role.
    Role(String),
    /// Every role.
    Public,
    /// The session's role.
    CurrentUser,
}

/// What privileges are granted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantObjects {
    /// Tables and views, as `(schema, name)`; no schema: the session's default.
    Tables(Vec<(Option<String>, String)>),
    /// Every table of these schemas, as they are now (as in PostgreSQL, later tables are not
    /// included).
    AllTablesInSchemas(Vec<String>),
    /// Schemas.
    Schemas(Vec<String>),
    /// Models.
    Models(Vec<String>),
    /// The database (`CREATE MODEL`).
    Database,
}

/// Which privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivilegeList {
    /// `ALL [PRIVILEGES]`: every privilege the objects have.
    All,
    /// These.
    Some(Vec<Privilege>),
}

/// A `GRANT` or `REVOKE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantStatement {
    /// Privileges on objects.
    Privileges {
        /// `GRANT` (true) or `REVOKE`.
        grant: bool,
        /// Which privileges.
        privileges: PrivilegeList,
        /// On what.
        objects: GrantObjects,
        /// To / from whom.
        grantees: Vec<Grantee>,
    },
    /// Role membership.
    Membership {
        /// `GRANT` (true) or `REVOKE`.
        grant: bool,
        /// The roles granted.
        roles: Vec<String>,
        /// Their new (or former) members.
        members: Vec<Grantee>,
    },
}

impl GrantStatement {
    /// The Postgres command tag.
    pub fn tag(&self) -> &'static str {
        match self {
            GrantStatement::Privileges { grant: true, .. } => "GRANT",
            GrantStatement::Privileges { grant: false, .. } => "REVOKE",
            GrantStatement::Membership { grant: true, .. } => "GRANT ROLE",
            GrantStatement::Membership { grant: false, .. } => "REVOKE ROLE",
        }
    }
}

/// Whether the next words begin a `GRANT` or `REVOKE`.
pub(crate) fn starts_grant_statement(at: &impl Fn(usize, &str) -> bool) -> bool {
    at(0, "grant") || at(0, "revoke")
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

fn peek_word(p: &Parser<'_>, n: usize, w: &str) -> bool {
    is_word(&p.peek_nth_token_ref(n).token, w)
}

fn unsupported(what: &str) -> EngineError {
    EngineError::statement(
        StatusCode::FeatureNotSupported,
        format!("{what} is not supported"),
    )
}

fn syntax(msg: String) -> EngineError {
    sql_error(ParserError::ParserError(msg))
}

/// Parse one `GRANT` / `REVOKE`; the parser stands on its first word.
pub(crate) fn parse(p: &mut Parser<'_>) -> EngineResult<GrantStatement> {
    let grant = p
        .expect_one_of_keywords(&[Keyword::GRANT, Keyword::REVOKE])
        .map_err(sql_error)?
        == Keyword::GRANT;
    let to = if grant { Keyword::TO } else { Keyword::FROM };
    if !grant && p.parse_keywords(&[Keyword::GRANT, Keyword::OPTION, Keyword::FOR]) {
        return Err(unsupported("REVOKE GRANT OPTION FOR"));
    }
    if !grant && p.parse_keywords(&[Keyword::ADMIN, Keyword::OPTION, Keyword::FOR]) {
        return Err(unsupported("REVOKE ADMIN OPTION FOR"));
    }
    if peek_word(p, 0, "create") && peek_word(p, 1, "model") {
        p.next_token();
        p.next_token();
        p.expect_keyword(to).map_err(sql_error)?;
        let grantees = grantees(p)?;
        tail(p, grant)?;
        return Ok(GrantStatement::Privileges {
            grant,
            privileges: PrivilegeList::Some(vec![Privilege::CreateModel]),
            objects: GrantObjects::Database,
            grantees,
        });
    }
    let (all, items) = if p.parse_keyword(Keyword::ALL) {
        let _ = p.parse_keyword(Keyword::PRIVILEGES);
        (true, vec![])
    } else {
        let items = p
            .parse_comma_separated(|p| {
                let i = p.parse_identifier()?;
                if p.peek_token_ref().token == Token::LParen {
                    return Err(ParserError::ParserError(
                        "column privileges are not supported: grant on the whole table".into(),
                    ));
                }
                Ok(i)
            })
            .map_err(|e| match e {
                ParserError::ParserError(m) if m.starts_with("column privileges") => {
                    EngineError::statement(StatusCode::FeatureNotSupported, m)
                }
                e => sql_error(e),
            })?;
        (false, items)
    };
    if p.parse_keyword(Keyword::ON) {
        let privileges = if all {
            PrivilegeList::All
        } else {
            PrivilegeList::Some(items.iter().map(privilege).collect::<EngineResult<_>>()?)
        };
        let objects = objects(p)?;
        p.expect_keyword(to).map_err(sql_error)?;
        let grantees = grantees(p)?;
        tail(p, grant)?;
        return Ok(GrantStatement::Privileges {
            grant,
            privileges,
            objects,
            grantees,
        });
    }
    if all {
        return Err(syntax("expected ON after ALL PRIVILEGES".into()));
    }
    p.expect_keyword(to).map_err(sql_error)?;
    let members = grantees(p)?;
    tail(p, grant)?;
    Ok(GrantStatement::Membership {
        grant,
        roles: items.iter().map(ident_name).collect(),
        members,
    })
}

fn privilege(i: &Ident) -> EngineResult<Privilege> {
    let word = if i.quote_style.is_none() {
        i.value.to_ascii_uppercase()
    } else {
        String::new()
    };
    Ok(match word.as_str() {
        "SELECT" => Privilege::Select,
        "INSERT" => Privilege::Insert,
        "UPDATE" => Privilege::Update,
        "DELETE" => Privilege::Delete,
        "TRUNCATE" => Privilege::Truncate,
        "USAGE" => Privilege::Usage,
        "CREATE" => Privilege::Create,
        "UNMASK" => Privilege::Unmask,
        "REFERENCES" | "TRIGGER" | "EXECUTE" | "CONNECT" | "TEMPORARY" | "TEMP" | "MAINTAIN" => {
            return Err(unsupported(&format!("the {word} privilege")));
        }
        _ => {
            return Err(EngineError::statement(
                StatusCode::SyntaxError,
                format!("unrecognized privilege type \"{}\"", i.value),
            ));
        }
    })
}

fn names(p: &mut Parser<'_>) -> EngineResult<Vec<String>> {
    let idents = p
        .parse_comma_separated(|p| p.parse_identifier())
        .map_err(sql_error)?;
    Ok(idents.iter().map(ident_name).collect())
}

fn objects(p: &mut Parser<'_>) -> EngineResult<GrantObjects> {
    if p.parse_keyword(Keyword::ALL) {
        p.expect_keyword(Keyword::TABLES).map_err(sql_error)?;
        p.expect_keywords(&[Keyword::IN, Keyword::SCHEMA])
            .map_err(sql_error)?;
        return Ok(GrantObjects::AllTablesInSchemas(names(p)?));
    }
    if p.parse_keyword(Keyword::SCHEMA) {
        return Ok(GrantObjects::Schemas(names(p)?));
    }
    if peek_word(p, 0, "model") {
        p.next_token();
        return Ok(GrantObjects::Models(names(p)?));
    }
    for other in [
        "sequence",
        "function",
        "procedure",
        "routine",
        "database",
        "domain",
        "foreign",
        "language",
        "large",
        "tablespace",
        "type",
        "parameter",
    ] {
        if peek_word(p, 0, other) {
            return Err(unsupported(&format!(
                "GRANT ON {}",
                other.to_ascii_uppercase()
            )));
        }
    }
    let _ = p.parse_keyword(Keyword::TABLE);
    let tables = p
        .parse_comma_separated(|p| p.parse_object_name(false))
        .map_err(sql_error)?;
    let tables = tables
        .iter()
        .map(|t| {
            let parts: Vec<String> =
                t.0.iter()
                    .map(|part| part.as_ident().map(ident_name))
                    .collect::<Option<_>>()
                    .ok_or_else(|| syntax(format!("invalid table name {t}")))?;
            match parts.as_slice() {
                [name] => Ok((None, name.clone())),
                [schema, name] => Ok((Some(schema.clone()), name.clone())),
                [_catalog, schema, name] => Ok((Some(schema.clone()), name.clone())),
                _ => Err(syntax(format!("invalid table name {t}"))),
            }
        })
        .collect::<EngineResult<_>>()?;
    Ok(GrantObjects::Tables(tables))
}

fn grantees(p: &mut Parser<'_>) -> EngineResult<Vec<Grantee>> {
    p.parse_comma_separated(|p| {
        let _ = p.parse_keyword(Keyword::GROUP);
        if p.parse_keyword(Keyword::CURRENT_USER) || p.parse_keyword(Keyword::SESSION_USER) {
            return Ok(Grantee::CurrentUser);
        }
        let i = p.parse_identifier()?;
        Ok(
            if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("public") {
                Grantee::Public
            } else {
                Grantee::Role(ident_name(&i))
            },
        )
    })
    .map_err(sql_error)
}

/// What may follow the grantees.
fn tail(p: &mut Parser<'_>, grant: bool) -> EngineResult<()> {
    if p.parse_keywords(&[Keyword::WITH, Keyword::GRANT, Keyword::OPTION]) {
        return Err(unsupported("WITH GRANT OPTION"));
    }
    if p.parse_keywords(&[Keyword::WITH, Keyword::ADMIN, Keyword::OPTION]) {
        return Err(unsupported("WITH ADMIN OPTION"));
    }
    if p.parse_keywords(&[Keyword::GRANTED, Keyword::BY]) {
        return Err(unsupported("GRANTED BY"));
    }
    if !grant {
        let _ = p.parse_one_of_keywords(&[Keyword::CASCADE, Keyword::RESTRICT]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::PrognosDialect;

    fn parse_one(sql: &str) -> EngineResult<GrantStatement> {
        let dialect = PrognosDialect::default();
        let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(sql_error)?;
        let out = parse(&mut p)?;
        assert!(
            matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon),
            "{sql}: tokens left"
        );
        Ok(out)
    }

    #[test]
    fn postgres_and_model_grants_parse() {
        assert_eq!(
            parse_one("GRANT SELECT, insert ON TABLE sales, public.\"Users\" TO alice, PUBLIC")
                .expect("parse"),
            GrantStatement::Privileges {
                grant: true,
                privileges: PrivilegeList::Some(vec![Privilege::Select, Privilege::Insert]),
                objects: GrantObjects::Tables(vec![
                    (None, "sales".into()),
                    (Some("public".into()), "Users".into())
                ]),
                grantees: vec![Grantee::Role("alice".into()), Grantee::Public],
            }
        );
        assert_eq!(
            parse_one("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM Bob CASCADE")
                .expect("parse"),
            GrantStatement::Privileges {
                grant: false,
                privileges: PrivilegeList::All,
                objects: GrantObjects::AllTablesInSchemas(vec!["public".into()]),
                grantees: vec![Grantee::Role("bob".into())],
            }
        );
        assert_eq!(
            parse_one("GRANT USAGE ON MODEL churn, \"Demand\" TO CURRENT_USER").expect("parse"),
            GrantStatement::Privileges {
                grant: true,
                privileges: PrivilegeList::Some(vec![Privilege::Usage]),
                objects: GrantObjects::Models(vec!["churn".into(), "Demand".into()]),
                grantees: vec![Grantee::CurrentUser],
            }
        );
        assert_eq!(
            parse_one("GRANT CREATE MODEL TO analysts").expect("parse"),
            GrantStatement::Privileges {
                grant: true,
                privileges: PrivilegeList::Some(vec![Privilege::CreateModel]),
                objects: GrantObjects::Database,
                grantees: vec![Grantee::Role("analysts".into())],
            }
        );
        assert_eq!(
            parse_one("GRANT CREATE ON SCHEMA public TO GROUP analysts").expect("parse"),
            GrantStatement::Privileges {
                grant: true,
                privileges: PrivilegeList::Some(vec![Privilege::Create]),
                objects: GrantObjects::Schemas(vec!["public".into()]),
                grantees: vec![Grantee::Role("analysts".into())],
            }
        );
        assert_eq!(
            parse_one("REVOKE analysts, pg_read_server_files FROM alice").expect("parse"),
            GrantStatement::Membership {
                grant: false,
                roles: vec!["analysts".into(), "pg_read_server_files".into()],
                members: vec![Grantee::Role("alice".into())],
            }
        );
    }

    #[test]
    fn grant_options_and_other_objects_are_refused_by_name() {
        for (sql, code, what) in [
            (
                "GRANT SELECT ON t TO a WITH GRANT OPTION",
                StatusCode::FeatureNotSupported,
                "WITH GRANT OPTION",
            ),
            (
                "GRANT SELECT (a, b) ON t TO a",
                StatusCode::FeatureNotSupported,
                "column privileges",
            ),
            (
                "GRANT EXECUTE ON FUNCTION f TO a",
                StatusCode::FeatureNotSupported,
                "EXECUTE",
            ),
            (
                "GRANT USAGE ON SEQUENCE s TO a",
                StatusCode::FeatureNotSupported,
                "SEQUENCE",
            ),
            (
                "GRANT SELEC ON t TO a",
                StatusCode::SyntaxError,
                "unrecognized privilege type \"SELEC\"",
            ),
            ("GRANT SELECT ON t", StatusCode::SyntaxError, "TO"),
            (
                "REVOKE GRANT OPTION FOR SELECT ON t FROM a",
                StatusCode::FeatureNotSupported,
                "GRANT OPTION FOR",
            ),
        ] {
            let e = parse_one(sql).expect_err(sql);
            assert_eq!(e.status(), code, "{sql}: {e}");
            assert!(e.to_string().contains(what), "{sql}: {e}");
        }
    }
}
