//! Role statements as PostgreSQL writes them, read from the statement's tokens:
//!
//! * `CREATE ROLE | USER name [IF NOT EXISTS] [[WITH] option …]` — `CREATE USER` is
//!   `CREATE ROLE … LOGIN`;
//! * `ALTER ROLE | USER name [WITH] option …` and `ALTER ROLE | USER name RENAME TO new`;
//! * `DROP ROLE | USER [IF EXISTS] name [, …]`.
//!
//! Options: `LOGIN` / `NOLOGIN`, `SUPERUSER` / `NOSUPERUSER`, `PASSWORD 'text' | NULL` (a
//! `SCRAM-SHA-256$…` verifier is stored as given, as PostgreSQL does). sqlparser reads the
//! option lists; PostgreSQL's other options (`CREATEDB`, `VALID UNTIL`, …) are refused by name.

use datafusion::sql::sqlparser::ast::{
    AlterRoleOperation, CreateRole, Expr, Ident, ObjectName, Password, RoleOption,
    Statement as SqlStatement, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::grant_sql::GrantStatement;
use crate::model_sql::ident_name;
use crate::parser::sql_error;

/// A role statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleStatement {
    /// `CREATE ROLE` / `CREATE USER`.
    Create {
        /// Role name.
        name: String,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Attributes; `login` defaults to true for `CREATE USER`.
        options: RoleOptions,
    },
    /// `ALTER ROLE … [WITH] options`.
    Alter {
        /// Role name.
        name: String,
        /// Attributes to change.
        options: RoleOptions,
    },
    /// `ALTER ROLE … RENAME TO`.
    Rename {
        /// Current name.
        name: String,
        /// New name.
        to: String,
    },
    /// `DROP ROLE` / `DROP USER`.
    Drop {
        /// Role names.
        names: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `GRANT` / `REVOKE` ([`crate::grant_sql`]).
    Grant(GrantStatement),
    /// `CREATE / DROP MASKING POLICY` ([`crate::masking_sql`]).
    Masking(crate::masking_sql::MaskingStatement),
    /// `REASSIGN OWNED BY … TO …` ([`crate::owner_sql`]).
    Reassign(crate::owner_sql::Reassign),
}

impl RoleStatement {
    /// The Postgres command tag.
    pub fn tag(&self) -> &'static str {
        match self {
            RoleStatement::Create { .. } => "CREATE ROLE",
            RoleStatement::Alter { .. } | RoleStatement::Rename { .. } => "ALTER ROLE",
            RoleStatement::Drop { .. } => "DROP ROLE",
            RoleStatement::Grant(g) => g.tag(),
            RoleStatement::Masking(m) => m.tag(),
            RoleStatement::Reassign(_) => "REASSIGN OWNED",
        }
    }
}

/// Role attributes a statement sets; `None` leaves one as it is (or at its default).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RoleOptions {
    /// `LOGIN` / `NOLOGIN`.
    pub login: Option<bool>,
    /// `SUPERUSER` / `NOSUPERUSER`.
    pub superuser: Option<bool>,
    /// `PASSWORD 'text'` (`Some(Some)`) or `PASSWORD NULL` (`Some(None)`).
    pub password: Option<Option<String>>,
}

impl std::fmt::Debug for RoleOptions {
    /// The password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleOptions")
            .field("login", &self.login)
            .field("superuser", &self.superuser)
            .field(
                "password",
                &self
                    .password
                    .as_ref()
                    .map(|p| p.as_ref().map(|_| "<redacted>")),
            )
            .finish()
    }
}

/// Whether the next words begin a role statement (`GRANT` / `REVOKE` included).
pub(crate) fn starts_role_statement(at: impl Fn(usize, &str) -> bool) -> bool {
    (at(0, "create") || at(0, "alter") || at(0, "drop")) && (at(1, "role") || at(1, "user"))
        || crate::grant_sql::starts_grant_statement(&at)
        || crate::masking_sql::starts_masking_statement(&at)
        || crate::owner_sql::starts_reassign(&at)
}

/// Parse one role statement; the parser stands on its first word.
pub(crate) fn parse(p: &mut Parser<'_>) -> EngineResult<RoleStatement> {
    if matches!(
        &p.peek_token_ref().token,
        Token::Word(w) if matches!(w.keyword, Keyword::GRANT | Keyword::REVOKE)
    ) {
        return crate::grant_sql::parse(p).map(RoleStatement::Grant);
    }
    if matches!(&p.peek_nth_token_ref(1).token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("masking"))
    {
        return crate::masking_sql::parse(p).map(RoleStatement::Masking);
    }
    if matches!(&p.peek_token_ref().token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("reassign"))
    {
        return crate::owner_sql::parse_reassign(p).map(RoleStatement::Reassign);
    }
    let verb = p
        .expect_one_of_keywords(&[Keyword::CREATE, Keyword::ALTER, Keyword::DROP])
        .map_err(sql_error)?;
    let user = p
        .expect_one_of_keywords(&[Keyword::ROLE, Keyword::USER])
        .map_err(sql_error)?
        == Keyword::USER;
    match verb {
        Keyword::CREATE => {
            let create = p.parse_create_role().map_err(sql_error)?;
            create_statement(create, user)
        }
        Keyword::ALTER => match p.parse_alter_role().map_err(sql_error)? {
            SqlStatement::AlterRole { name, operation } => alter_statement(name, operation),
            other => Err(unsupported(&format!("{other}"))),
        },
        _ => {
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let names = p
                .parse_comma_separated(|p| p.parse_identifier())
                .map_err(sql_error)?;
            Ok(RoleStatement::Drop {
                names: names.iter().map(ident_name).collect(),
                if_exists,
            })
        }
    }
}

fn unsupported(what: &str) -> EngineError {
    EngineError::statement(
        StatusCode::FeatureNotSupported,
        format!(
            "{what} is not supported: roles have LOGIN / NOLOGIN, SUPERUSER / NOSUPERUSER and PASSWORD"
        ),
    )
}

fn one_name(names: Vec<ObjectName>) -> EngineResult<String> {
    let [name] = names.as_slice() else {
        return Err(sql_error(ParserError::ParserError(
            "CREATE ROLE takes one role name".into(),
        )));
    };
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(ident_name)
            .ok_or_else(|| sql_error(ParserError::ParserError("invalid role name".into()))),
        _ => Err(sql_error(ParserError::ParserError(format!(
            "role name \"{name}\" must not be qualified"
        )))),
    }
}

fn create_statement(c: CreateRole, user: bool) -> EngineResult<RoleStatement> {
    let CreateRole {
        names,
        if_not_exists,
        login,
        inherit,
        bypassrls,
        password,
        superuser,
        create_db,
        create_role,
        replication,
        connection_limit,
        valid_until,
        in_role,
        in_group,
        role,
        user: users,
        admin,
        authorization_owner,
    } = c;
    let refused = [
        (inherit.is_some(), "INHERIT"),
        (bypassrls.is_some(), "BYPASSRLS"),
        (create_db.is_some(), "CREATEDB"),
        (create_role.is_some(), "CREATEROLE"),
        (replication.is_some(), "REPLICATION"),
        (connection_limit.is_some(), "CONNECTION LIMIT"),
        (valid_until.is_some(), "VALID UNTIL"),
        (!in_role.is_empty() || !in_group.is_empty(), "IN ROLE"),
        (!role.is_empty() || !users.is_empty(), "ROLE"),
        (!admin.is_empty(), "ADMIN"),
        (authorization_owner.is_some(), "AUTHORIZATION"),
    ];
    if let Some((_, what)) = refused.iter().find(|(set, _)| *set) {
        return Err(unsupported(what));
    }
    Ok(RoleStatement::Create {
        name: one_name(names)?,
        if_not_exists,
        options: RoleOptions {
            login: login.or(user.then_some(true)),
            superuser,
            password: password.map(password_value).transpose()?,
        },
    })
}

fn alter_statement(name: Ident, operation: AlterRoleOperation) -> EngineResult<RoleStatement> {
    let name = ident_name(&name);
    match operation {
        AlterRoleOperation::RenameRole { role_name } => Ok(RoleStatement::Rename {
            name,
            to: ident_name(&role_name),
        }),
        AlterRoleOperation::WithOptions { options: list } => {
            let mut options = RoleOptions::default();
            for o in list {
                match o {
                    RoleOption::Login(v) => options.login = Some(v),
                    RoleOption::SuperUser(v) => options.superuser = Some(v),
                    RoleOption::Password(p) => options.password = Some(password_value(p)?),
                    other => return Err(unsupported(&other.to_string())),
                }
            }
            Ok(RoleStatement::Alter { name, options })
        }
        AlterRoleOperation::Set { .. } | AlterRoleOperation::Reset { .. } => {
            Err(unsupported("ALTER ROLE … SET / RESET (per-role settings)"))
        }
        other => Err(unsupported(&format!("ALTER ROLE {other}"))),
    }
}

fn password_value(p: Password) -> EngineResult<Option<String>> {
    match p {
        Password::NullPassword => Ok(None),
        Password::Password(Expr::Value(v)) => match v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Ok(Some(s)),
            Value::Null => Ok(None),
            _ => Err(password_literal()),
        },
        Password::Password(_) => Err(password_literal()),
    }
}

fn password_literal() -> EngineError {
    EngineError::statement(
        StatusCode::SyntaxError,
        "PASSWORD takes a string literal or NULL",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::PrognosDialect;

    fn at_end(p: &Parser<'_>) -> bool {
        matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon)
    }

    fn parse_one(sql: &str) -> EngineResult<RoleStatement> {
        let dialect = PrognosDialect::default();
        let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(sql_error)?;
        let out = parse(&mut p)?;
        assert!(at_end(&p), "{sql}: tokens left");
        Ok(out)
    }

    #[test]
    fn postgres_role_statements_parse() {
        let c = parse_one("CREATE USER alice WITH PASSWORD 'pw' SUPERUSER").expect("parse");
        assert_eq!(
            c,
            RoleStatement::Create {
                name: "alice".into(),
                if_not_exists: false,
                options: RoleOptions {
                    login: Some(true),
                    superuser: Some(true),
                    password: Some(Some("pw".into())),
                },
            }
        );
        assert!(!format!("{c:?}").contains("pw\""));
        let r = parse_one("CREATE ROLE IF NOT EXISTS \"Readers\"").expect("parse");
        assert_eq!(
            r,
            RoleStatement::Create {
                name: "Readers".into(),
                if_not_exists: true,
                options: RoleOptions::default(),
            }
        );
        assert_eq!(
            parse_one("ALTER USER bob WITH NOLOGIN PASSWORD NULL").expect("parse"),
            RoleStatement::Alter {
                name: "bob".into(),
                options: RoleOptions {
                    login: Some(false),
                    superuser: None,
                    password: Some(None),
                },
            }
        );
        assert_eq!(
            parse_one("ALTER ROLE bob RENAME TO carol").expect("parse"),
            RoleStatement::Rename {
                name: "bob".into(),
                to: "carol".into()
            }
        );
        assert_eq!(
            parse_one("DROP USER IF EXISTS a, b").expect("parse"),
            RoleStatement::Drop {
                names: vec!["a".into(), "b".into()],
                if_exists: true
            }
        );
    }

    #[test]
    fn other_role_options_are_refused_by_name() {
        for (sql, what) in [
            ("CREATE ROLE r CREATEDB", "CREATEDB"),
            ("CREATE USER r VALID UNTIL '2030-01-01'", "VALID UNTIL"),
            ("ALTER ROLE r CREATEROLE", "CREATEROLE"),
            ("ALTER ROLE r SET search_path = x", "SET / RESET"),
        ] {
            let e = parse_one(sql).expect_err(sql);
            assert_eq!(e.status(), StatusCode::FeatureNotSupported, "{sql}");
            assert!(e.to_string().contains(what), "{sql}: {e}");
        }
        let e = parse_one("CREATE USER r PASSWORD 1 + 1").expect_err("expr");
        assert_eq!(e.status(), StatusCode::SyntaxError);
        let e = parse_one("CREATE USER a, b").expect_err("two names");
        assert_eq!(e.status(), StatusCode::SyntaxError);
    }
}
