//! Ownership changes, as in PostgreSQL: `ALTER TABLE | VIEW t OWNER TO r`, `ALTER MODEL m
//! OWNER TO r` and `REASSIGN OWNED BY a [, b …] TO r`.
//!
//! Giving an object away needs its ownership (directly or through a role one belongs to) and
//! membership in the new owner; a superuser may do either freely. `REASSIGN OWNED` needs
//! membership in every old owner and in the new one, and moves every table, view and model
//! they own (grants and masking policies stay on the objects). It is how a role that owns
//! objects becomes droppable (`DROP ROLE` fails with `2BP01` while it owns any). Each change is
//! one write of `roles.json`; cached plans expire as after `GRANT`.

use datafusion::sql::sqlparser::ast::{AlterTable, AlterTableOperation, Owner};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use prognos_catalog::{CatalogError, PREDEFINED_ROLES, Securable};

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::model_sql::expect_word;
use crate::parser::sql_error;
use crate::session::Session;
use crate::{Engine, Output};

/// `REASSIGN OWNED BY from, … TO to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassign {
    /// The roles whose objects move.
    pub from: Vec<String>,
    /// The new owner.
    pub to: String,
}

/// Whether the words at the parser start `REASSIGN OWNED`.
pub(crate) fn starts_reassign(at: &impl Fn(usize, &str) -> bool) -> bool {
    at(0, "reassign") && at(1, "owned")
}

fn role_name(p: &mut Parser<'_>) -> EngineResult<String> {
    Ok(crate::model_sql::ident_name(
        &p.parse_identifier().map_err(sql_error)?,
    ))
}

/// Parse `REASSIGN OWNED BY a [, b …] TO r`; the parser stands on `REASSIGN`.
pub(crate) fn parse_reassign(p: &mut Parser<'_>) -> EngineResult<Reassign> {
    expect_word(p, "reassign")?;
    expect_word(p, "owned")?;
    p.expect_keyword(Keyword::BY).map_err(sql_error)?;
    let mut from = vec![role_name(p)?];
    while p.consume_token(&Token::Comma) {
        from.push(role_name(p)?);
    }
    p.expect_keyword(Keyword::TO).map_err(sql_error)?;
    let to = role_name(p)?;
    Ok(Reassign { from, to })
}

/// The new owner of an `ALTER TABLE … OWNER TO …`, when that is the whole statement.
pub(crate) fn owner_target(alter: &AlterTable) -> Option<&Owner> {
    match alter.operations.as_slice() {
        [AlterTableOperation::OwnerTo { new_owner }] => Some(new_owner),
        _ => None,
    }
}

/// A role that must exist: `42704` otherwise (the predefined roles exist).
fn existing_role(engine: &Engine, name: &str) -> EngineResult<()> {
    if engine.roles.get(name).is_some() || PREDEFINED_ROLES.contains(&name) {
        Ok(())
    } else {
        Err(CatalogError::RoleNotFound(name.to_string()).into())
    }
}

fn not_member(role: &str) -> EngineError {
    EngineError::statement(
        StatusCode::InsufficientPrivilege,
        format!("permission denied: must be able to SET ROLE \"{role}\""),
    )
}

/// Give `object` to `new_owner` as the session's role (see the module docs).
pub(crate) fn change_owner(
    engine: &Engine,
    session: &Session,
    object: Securable,
    new_owner: &str,
) -> EngineResult<()> {
    let privileges = engine.privileges(session);
    crate::privileges::require_owner(&privileges, &object)?;
    existing_role(engine, new_owner)?;
    if !privileges.in_role(new_owner) {
        return Err(not_member(new_owner));
    }
    engine.roles.update_acl(|acl, _| {
        acl.set_owner(object, new_owner);
        Ok(())
    })?;
    engine.bump_epoch();
    Ok(())
}

/// `ALTER TABLE | VIEW t OWNER TO r`.
pub(crate) async fn alter_table_owner(
    engine: &Engine,
    session: &Session,
    alter: &AlterTable,
) -> EngineResult<Output> {
    let Some(owner) = owner_target(alter) else {
        return Err(EngineError::statement(
            StatusCode::FeatureNotSupported,
            "ALTER TABLE supports RENAME TO and OWNER TO only",
        ));
    };
    let new_owner = match owner {
        Owner::Ident(i) => crate::model_sql::ident_name(i),
        Owner::CurrentRole | Owner::CurrentUser | Owner::SessionUser => session.user(),
    };
    let table = datafusion::sql::planner::object_name_to_table_reference(alter.name.clone(), true)?;
    if !session.ctx().table_exist(table.clone())? {
        if alter.if_exists {
            session.notice(format!(
                "relation \"{}\" does not exist, skipping",
                alter.name
            ));
            return Ok(crate::statements::command("ALTER TABLE"));
        }
        return Err(EngineError::statement(
            StatusCode::UndefinedTable,
            format!("relation \"{}\" does not exist", alter.name),
        ));
    }
    let object = crate::privileges::table_of(&table)?;
    change_owner(engine, session, object, &new_owner)?;
    Ok(crate::statements::command("ALTER TABLE"))
}

/// `REASSIGN OWNED BY … TO …`.
pub(crate) fn reassign(engine: &Engine, session: &Session, r: &Reassign) -> EngineResult<Output> {
    let privileges = engine.privileges(session);
    for role in r.from.iter().chain(std::iter::once(&r.to)) {
        existing_role(engine, role)?;
        if !privileges.in_role(role) {
            return Err(not_member(role));
        }
    }
    let moved = engine.roles.update_acl(|acl, _| {
        let mut moved = 0;
        for from in &r.from {
            for object in acl.owned_by(from) {
                acl.set_owner(object, &r.to);
                moved += 1;
            }
        }
        Ok(moved)
    })?;
    engine.bump_epoch();
    session.notice(format!(
        "{moved} object(s) of {} now owned by \"{}\"",
        r.from.join(", "),
        r.to
    ));
    Ok(crate::statements::command("REASSIGN OWNED"))
}
