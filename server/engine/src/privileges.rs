//! Privileges at run time: the checks every statement passes before it runs, ownership of
//! new objects, and `GRANT` / `REVOKE`.
//!
//! **Where the checks are.** A statement's logical plan names every table it reads or writes
//! (scans — `TABLE t` arguments of the model functions and training queries included — DML
//! targets, DDL targets), so [`check_plan`] walks the plan, subqueries included, right before
//! it runs: ad-hoc statements, prepared statements and Flight SQL tickets (each execution,
//! so a REVOKE takes effect on the next run), `COPY`, `CREATE TABLE … AS` and the training
//! query of `CREATE MODEL`. Models are checked where they are looked up: a session's model
//! functions see a [`ModelSnapshot`](prognos_catalog::ModelSnapshot) restricted to the models
//! its role may use, so `PREDICT`, `FORECAST`, `ANOMALY`, `EVALUATE`, … of another model is
//! `42501` whatever path reaches it. What a role may not see is not listed
//! (`information_schema`, `pg_catalog`, Flight SQL `GetTables`, `SHOW MODELS`).
//!
//! The catalog schemas `pg_catalog` and `information_schema` and the `system` tables are
//! readable by every role, as PostgreSQL's catalogs are; they list only what the role sees.
//! `system.audit_log` is the exception: superusers, and roles granted `SELECT` on it.
//! A view reads with its reader's privileges (PostgreSQL's `security_invoker` views): the
//! planner puts the view's own plan in the statement's, so the reader needs `SELECT` on the
//! view and on the tables it reads.

use std::collections::BTreeSet;

use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use prognos_catalog::grants::PREDEFINED_ROLES;
use prognos_catalog::{Privilege, Privileges, Securable};

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::grant_sql::{GrantObjects, GrantStatement, Grantee, PrivilegeList};
use crate::session::Session;
use crate::statements::split_name;
use crate::{CATALOG_NAME, Engine, Output, SYSTEM_SCHEMA};

/// Schemas every role reads (catalogs; their rows are filtered by what the role sees).
const CATALOG_SCHEMAS: [&str; 3] = ["pg_catalog", "information_schema", SYSTEM_SCHEMA];

/// `42501` for a missing privilege, worded as PostgreSQL words it.
pub(crate) fn denied(object: &Securable) -> EngineError {
    EngineError::statement(
        StatusCode::InsufficientPrivilege,
        format!("permission denied for {object}"),
    )
}

/// `42501` for a statement only the owner may run.
pub(crate) fn not_owner(object: &Securable) -> EngineError {
    EngineError::statement(
        StatusCode::InsufficientPrivilege,
        format!("must be owner of {object}"),
    )
}

/// `42501` unless the role holds `privilege` on `object`.
pub(crate) fn require(
    p: &Privileges,
    object: &Securable,
    privilege: Privilege,
) -> EngineResult<()> {
    if p.has(object, privilege) {
        Ok(())
    } else {
        Err(denied(object))
    }
}

/// `42501` unless the role owns `object`.
pub(crate) fn require_owner(p: &Privileges, object: &Securable) -> EngineResult<()> {
    if p.owns(object) {
        Ok(())
    } else {
        Err(not_owner(object))
    }
}

fn superuser_only(what: &str) -> EngineError {
    EngineError::statement(
        StatusCode::InsufficientPrivilege,
        format!("permission denied to {what}: only superusers may"),
    )
}

/// The securable of a table reference.
pub(crate) fn table_of(r: &TableReference) -> EngineResult<Securable> {
    let (schema, name) = split_name(r)?;
    Ok(Securable::Table { schema, name })
}

impl Engine {
    /// What the session's role may do now.
    pub(crate) fn privileges(&self, session: &Session) -> Privileges {
        self.roles.privileges(&session.user())
    }

    /// Record the session's role as the owner of a new object.
    pub(crate) fn record_owner(&self, session: &Session, object: Securable) -> EngineResult<()> {
        self.roles.set_owner(object, &session.user())?;
        Ok(())
    }

    /// A session of `object`'s owner (the bootstrap superuser when none is recorded), for work
    /// the server does on the owner's behalf (a scheduled retrain).
    pub(crate) fn owner_session(&self, object: &Securable) -> Session {
        let owner = self
            .roles
            .acl()
            .owner(object)
            .map(str::to_string)
            .unwrap_or_else(|| self.bootstrap_superuser.clone());
        let superuser = self.roles.get(&owner).is_some_and(|r| r.superuser);
        let session = self.new_session();
        session.set_user(&owner, superuser);
        session
    }

    /// Forget a dropped object's owner and grants.
    pub(crate) fn forget_object(&self, object: &Securable) {
        if let Err(e) = self.roles.forget(object) {
            tracing::warn!(%object, error = %e, "could not forget the privileges of a dropped object");
        }
    }

    /// Move an object's owner and grants to its new name.
    pub(crate) fn rename_object(&self, from: &Securable, to: Securable) -> EngineResult<()> {
        self.roles.update_acl(|acl, _| {
            acl.rename(from, to);
            Ok(())
        })?;
        Ok(())
    }
}

/// Check that the session's role may run `plan` (see the module docs), noting the tables it
/// touches for the audit log when that is on.
pub(crate) fn check_plan(
    engine: &Engine,
    session: &Session,
    plan: &LogicalPlan,
) -> EngineResult<()> {
    let p = engine.privileges(session);
    let noting = engine.audits();
    if p.is_superuser() && !noting {
        return Ok(());
    }
    let mut failed = None;
    plan.apply_with_subqueries(|node| {
        if noting && let Some(r) = touched_table(node) {
            session.touch(qualified(r), None);
        }
        if p.is_superuser() {
            return Ok(TreeNodeRecursion::Continue);
        }
        match check_node(session, &p, node) {
            Ok(()) => Ok(TreeNodeRecursion::Continue),
            Err(e) => {
                failed = Some(e);
                Ok(TreeNodeRecursion::Stop)
            }
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// `schema.table` of a reference.
fn qualified(r: &TableReference) -> Option<String> {
    split_name(r).ok().map(|(s, t)| format!("{s}.{t}"))
}

/// The table a plan node reads or writes.
fn touched_table(node: &LogicalPlan) -> Option<&TableReference> {
    match node {
        LogicalPlan::TableScan(scan) => Some(&scan.table_name),
        LogicalPlan::Dml(d) => Some(&d.table_name),
        LogicalPlan::Ddl(ddl) => match ddl {
            DdlStatement::CreateMemoryTable(c) => Some(&c.name),
            DdlStatement::CreateExternalTable(c) => Some(&c.name),
            DdlStatement::CreateView(v) => Some(&v.name),
            DdlStatement::DropTable(d) => Some(&d.name),
            DdlStatement::DropView(d) => Some(&d.name),
            _ => None,
        },
        _ => None,
    }
}

/// `42501` unless the session's role holds `privilege` on table `r`.
pub(crate) fn require_table(
    engine: &Engine,
    session: &Session,
    r: &TableReference,
    privilege: Privilege,
) -> EngineResult<()> {
    if engine.audits() {
        session.touch(qualified(r), None);
    }
    check_table(&engine.privileges(session), r, privilege)
}

fn check_table(p: &Privileges, r: &TableReference, privilege: Privilege) -> EngineResult<()> {
    let object = table_of(r)?;
    if let Securable::Table { schema, name } = &object
        && CATALOG_SCHEMAS.contains(&schema.as_str())
        && !(schema == SYSTEM_SCHEMA && name == crate::audit_table::AUDIT_TABLE)
    {
        return if privilege == Privilege::Select {
            Ok(())
        } else {
            Err(denied(&object))
        };
    }
    require(p, &object, privilege)
}

/// `CREATE` on the schema of a new table; ownership of one it replaces.
fn check_create(
    session: &Session,
    p: &Privileges,
    r: &TableReference,
    or_replace: bool,
) -> EngineResult<()> {
    let (schema, _) = split_name(r)?;
    require(p, &Securable::Schema(schema), Privilege::Create)?;
    if or_replace && session.ctx().table_exist(r.clone()).unwrap_or(false) {
        require_owner(p, &table_of(r)?)?;
    }
    Ok(())
}

fn check_node(session: &Session, p: &Privileges, node: &LogicalPlan) -> EngineResult<()> {
    match node {
        LogicalPlan::TableScan(scan) => check_table(p, &scan.table_name, Privilege::Select),
        LogicalPlan::Dml(DmlStatement { table_name, op, .. }) => match op {
            WriteOp::Insert(_) => check_table(p, table_name, Privilege::Insert),
            WriteOp::Update => check_table(p, table_name, Privilege::Update),
            WriteOp::Delete => check_table(p, table_name, Privilege::Delete),
            WriteOp::Truncate => check_table(p, table_name, Privilege::Truncate),
            WriteOp::Ctas => check_create(session, p, table_name, false),
            _ => require_owner(p, &table_of(table_name)?),
        },
        LogicalPlan::Ddl(ddl) => match ddl {
            DdlStatement::CreateMemoryTable(c) => check_create(session, p, &c.name, c.or_replace),
            DdlStatement::CreateExternalTable(c) => check_create(session, p, &c.name, c.or_replace),
            DdlStatement::CreateView(v) => check_create(session, p, &v.name, v.or_replace),
            DdlStatement::DropTable(d) => check_drop(session, p, &d.name),
            DdlStatement::DropView(d) => check_drop(session, p, &d.name),
            DdlStatement::CreateCatalogSchema(_) => Err(superuser_only("create schemas")),
            DdlStatement::DropCatalogSchema(_) => Err(superuser_only("drop schemas")),
            DdlStatement::CreateCatalog(_) => Err(superuser_only("create databases")),
            DdlStatement::CreateIndex(_) => Err(superuser_only("create indexes")),
            DdlStatement::CreateFunction(_) | DdlStatement::DropFunction(_) => {
                Err(superuser_only("create or drop functions"))
            }
        },
        _ => Ok(()),
    }
}

fn check_drop(session: &Session, p: &Privileges, r: &TableReference) -> EngineResult<()> {
    if session.ctx().table_exist(r.clone()).unwrap_or(false) {
        require_owner(p, &table_of(r)?)
    } else {
        Ok(())
    }
}

fn invalid_grant(message: String) -> EngineError {
    EngineError::statement(StatusCode::InvalidGrantOperation, message)
}

fn no_such_role(name: &str) -> EngineError {
    EngineError::statement(
        StatusCode::UndefinedObject,
        format!("role \"{name}\" does not exist"),
    )
}

/// Run a `GRANT` / `REVOKE`.
pub(crate) async fn execute_grant(
    engine: &Engine,
    session: &Session,
    stmt: &GrantStatement,
) -> EngineResult<Output> {
    let p = engine.privileges(session);
    let grantee_name = |g: &Grantee| -> EngineResult<String> {
        match g {
            Grantee::Role(r) if engine.roles.exists(r) => Ok(r.clone()),
            Grantee::Role(r) => Err(no_such_role(r)),
            Grantee::Public => Ok(prognos_catalog::grants::PUBLIC.to_string()),
            Grantee::CurrentUser => Ok(session.user()),
        }
    };
    match stmt {
        GrantStatement::Privileges {
            grant,
            privileges,
            objects,
            grantees,
        } => {
            let objects = resolve_objects(engine, session, &p, objects).await?;
            let grantees = grantees
                .iter()
                .map(grantee_name)
                .collect::<EngineResult<Vec<_>>>()?;
            let mut changes = vec![];
            for object in objects {
                let set: BTreeSet<Privilege> = match privileges {
                    PrivilegeList::All => object.all_privileges().into_iter().collect(),
                    PrivilegeList::Some(list) => {
                        for privilege in list {
                            if !object.grantable().contains(privilege) {
                                return Err(invalid_grant(format!(
                                    "invalid privilege type {} for {}",
                                    privilege.keyword(),
                                    object.kind()
                                )));
                            }
                        }
                        list.iter().copied().collect()
                    }
                };
                changes.push((object, set));
            }
            engine.roles.update_acl(|acl, _| {
                for (object, set) in &changes {
                    for g in &grantees {
                        if *grant {
                            acl.grant(object, g, set);
                        } else {
                            acl.revoke(object, g, set);
                        }
                    }
                }
                Ok(())
            })?;
        }
        GrantStatement::Membership {
            grant,
            roles,
            members,
        } => {
            if !p.is_superuser() {
                return Err(superuser_only(if *grant {
                    "grant roles"
                } else {
                    "revoke roles"
                }));
            }
            for r in roles {
                if !engine.roles.exists(r) {
                    return Err(no_such_role(r));
                }
            }
            let members = members
                .iter()
                .map(|m| match m {
                    Grantee::Public => Err(no_such_role("public")),
                    other => grantee_name(other),
                })
                .collect::<EngineResult<Vec<_>>>()?;
            let mut refused = None;
            engine.roles.update_acl(|acl, _| {
                // Every pair is checked before any changes, so a refused statement changes
                // nothing.
                for role in roles.iter().filter(|_| *grant) {
                    for member in &members {
                        if PREDEFINED_ROLES.contains(&member.as_str()) {
                            refused = Some(invalid_grant(format!(
                                "role \"{member}\" is predefined: other roles cannot be granted to it"
                            )));
                        } else if role == member || acl.is_member(role, member) {
                            refused = Some(invalid_grant(format!(
                                "role \"{member}\" is a member of role \"{role}\": granting it would make a membership loop"
                            )));
                        }
                    }
                }
                if refused.is_some() {
                    return Ok(());
                }
                for role in roles {
                    for member in &members {
                        if *grant {
                            acl.add_member(role, member);
                        } else {
                            acl.remove_member(role, member);
                        }
                    }
                }
                Ok(())
            })?;
            if let Some(e) = refused {
                return Err(e);
            }
        }
    }
    // Cached plans were checked for the privileges as they were.
    engine.bump_epoch();
    Ok(Output::Command {
        tag: stmt.tag().to_string(),
        rows: None,
    })
}

/// The objects a GRANT names, each checked to exist and to be the granting role's.
async fn resolve_objects(
    engine: &Engine,
    session: &Session,
    p: &Privileges,
    objects: &GrantObjects,
) -> EngineResult<Vec<Securable>> {
    let out = match objects {
        GrantObjects::Tables(tables) => {
            let mut out = vec![];
            for (schema, name) in tables {
                let r = match schema {
                    Some(s) => TableReference::partial(s.as_str(), name.as_str()),
                    None => TableReference::bare(name.as_str()),
                };
                if !session.ctx().table_exist(r.clone()).unwrap_or(false) {
                    return Err(EngineError::statement(
                        StatusCode::UndefinedTable,
                        format!("relation \"{name}\" does not exist"),
                    ));
                }
                out.push(table_of(&r)?);
            }
            out
        }
        GrantObjects::AllTablesInSchemas(schemas) => {
            let catalog = session.ctx().catalog(CATALOG_NAME);
            let mut out = vec![];
            for s in schemas {
                let provider = catalog
                    .as_ref()
                    .and_then(|c| c.schema(s))
                    .ok_or_else(|| undefined_schema(s))?;
                let mut names = provider.table_names();
                names.sort();
                out.extend(names.iter().map(|n| Securable::table(s, n)));
            }
            out
        }
        GrantObjects::Schemas(schemas) => {
            if !p.is_superuser() {
                return Err(superuser_only("grant privileges on schemas"));
            }
            let catalog = session.ctx().catalog(CATALOG_NAME);
            for s in schemas {
                if catalog.as_ref().and_then(|c| c.schema(s)).is_none() {
                    return Err(undefined_schema(s));
                }
            }
            schemas
                .iter()
                .map(|s| Securable::Schema(s.clone()))
                .collect()
        }
        GrantObjects::Models(models) => {
            let mut out = vec![];
            for m in models {
                if engine.registry.get(m).is_none() {
                    return Err(prognos_catalog::CatalogError::ModelNotFound(m.clone()).into());
                }
                out.push(Securable::Model(m.clone()));
            }
            out
        }
        GrantObjects::Database => {
            if !p.is_superuser() {
                return Err(superuser_only("grant CREATE MODEL"));
            }
            vec![Securable::Database]
        }
    };
    for object in &out {
        require_owner(p, object)?;
    }
    Ok(out)
}

fn undefined_schema(s: &str) -> EngineError {
    EngineError::statement(
        StatusCode::UndefinedSchema,
        format!("schema \"{s}\" does not exist"),
    )
}
