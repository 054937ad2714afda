//! `ALTER TABLE [IF EXISTS] t RENAME TO u` — for managed tables, views and external tables
//! (PostgreSQL renames views with `ALTER TABLE` too; dbt's materializations do).
//!
//! A managed table keeps its storage; only its catalog entry changes name. Inside a
//! transaction block that is the block's change (the old name dropped, the new one created on
//! the same table), published at COMMIT; outside one, the catalog entry is replaced in one
//! atomic catalog write. Views and external tables are renamed at once, as their other DDL
//! is (see [`crate::transaction`]); at start-up they are re-created under their entry's name.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{AlterTable, AlterTableOperation, RenameTableNameKind};
use prognos_catalog::{ManagedTable, TableEntry};

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::statements::{command, not_transactional, split_name};
use crate::transaction::Change;
use crate::{Engine, Output, Session};

/// The new name of an `ALTER TABLE … RENAME TO …`, when that is the whole statement.
pub(crate) fn rename_target(
    alter: &AlterTable,
) -> Option<&datafusion::sql::sqlparser::ast::ObjectName> {
    match alter.operations.as_slice() {
        [AlterTableOperation::RenameTable { table_name }] => Some(match table_name {
            RenameTableNameKind::To(n) | RenameTableNameKind::As(n) => n,
        }),
        _ => None,
    }
}

/// Run `ALTER TABLE … RENAME TO …` (see the module docs).
pub(crate) async fn rename(
    engine: &Engine,
    session: &Session,
    alter: &AlterTable,
) -> EngineResult<Output> {
    let Some(to) = rename_target(alter) else {
        return Err(EngineError::statement(
            StatusCode::FeatureNotSupported,
            "ALTER TABLE supports RENAME TO only",
        ));
    };
    let from_ref = object_name_to_table_reference(alter.name.clone(), true)?;
    let to_ref = object_name_to_table_reference(to.clone(), true)?;
    let (schema, from) = split_name(&from_ref)?;
    let (to_schema, to) = split_name(&to_ref)?;
    if to_ref.schema().is_some() && to_schema != schema {
        return Err(EngineError::statement(
            StatusCode::FeatureNotSupported,
            "ALTER TABLE … RENAME TO cannot move a table to another schema",
        ));
    }
    let _guard = engine.ddl_lock.lock().await;
    let ctx = session.ctx();
    let Some(provider) = ctx
        .table_provider(from_ref.clone())
        .await
        .ok()
        .map(|p| crate::masked_table::unmasked(&p))
    else {
        if alter.if_exists {
            session.notice(format!("relation \"{from}\" does not exist, skipping"));
            return Ok(command("ALTER TABLE"));
        }
        return Err(EngineError::statement(
            StatusCode::UndefinedTable,
            format!("relation \"{from}\" does not exist"),
        ));
    };
    if ctx.table_exist(datafusion::common::TableReference::partial(
        schema.as_str(),
        to.as_str(),
    ))? {
        return Err(EngineError::statement(
            StatusCode::DuplicateTable,
            format!("relation \"{to}\" already exists"),
        ));
    }
    crate::privileges::require_owner(
        &engine.privileges(session),
        &prognos_catalog::Securable::table(&schema, &from),
    )?;
    let entry = session
        .txn()
        .created_entry(&schema, &from)
        .or_else(|| engine.catalog.get(&schema, &from))
        .ok_or_else(|| {
            EngineError::statement(
                StatusCode::FeatureNotSupported,
                format!("\"{from}\" is not a table prognos can rename"),
            )
        })?;
    let renamed = TableEntry {
        name: to.clone(),
        ..entry
    };
    let managed = managed_table(&provider);
    if let Some(table) = &managed {
        let txn = session.txn();
        if txn.active() {
            txn.record(Change::Drop {
                schema: schema.clone(),
                name: from,
            });
            txn.record(Change::Create {
                entry: renamed,
                table: table.clone(),
                or_replace: false,
                owns_storage: false,
            });
            return Ok(command("ALTER TABLE"));
        }
    } else {
        not_transactional(
            session,
            "ALTER TABLE … RENAME TO of a view or external table",
        );
    }
    engine
        .catalog
        .apply(&[(schema.clone(), from.clone())], &[renamed])?;
    let shared = crate::transaction::commit::shared_schema(engine, &schema)?;
    shared.deregister_table(&from)?;
    shared.register_table(to.clone(), provider)?;
    engine.rename_object(
        &prognos_catalog::Securable::table(&schema, &from),
        prognos_catalog::Securable::table(&schema, &to),
    )?;
    engine.bump_epoch();
    Ok(command("ALTER TABLE"))
}

/// The managed table behind `provider` (itself, or a transaction's view of it).
fn managed_table(provider: &Arc<dyn TableProvider>) -> Option<ManagedTable> {
    let any: &dyn std::any::Any = provider.as_ref();
    if let Some(t) = any.downcast_ref::<ManagedTable>() {
        return Some(t.clone());
    }
    any.downcast_ref::<prognos_catalog::StagedTable>()
        .map(|s| s.table().clone())
}
