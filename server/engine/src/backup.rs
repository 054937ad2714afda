//! `BACKUP TO 'folder'`: a consistent copy of a running server's data dir.
//!
//! The copy is a data dir a server can be started on (`prognos serve --data-dir folder`), so
//! restoring is starting on it (or moving it into place while the server is stopped). It holds
//! the catalog, the roles with their grants and masking policies, the masking key, the model
//! registry with the local artifacts of every version, and every local managed table as of one
//! moment: the statement holds the DDL lock throughout (no table is created, dropped or
//! renamed, and no transaction block commits, while it runs), and reads every table's latest
//! manifest while holding all their commit locks at once, so the tables it copies are those of
//! one instant even while `INSERT`s go on. Data files are immutable once a manifest lists them,
//! so they are copied after the locks are released. Tables and artifacts stored in object
//! stores (S3, HDFS) stay where they are and the copy refers to them; files under `files/` and
//! the audit log are not copied.
//!
//! Only superusers may run it, and the folder follows the server-file rules for writing; it
//! must not exist or be empty.

use std::path::Path;

use prognos_catalog::{ManagedTable, TableKind};
use prognos_storage::durable;
use prognos_storage::manifest::manifest_file_name;

use crate::error::{EngineError, EngineResult, StatusCode};
use crate::server_files::Access;
use crate::{Engine, Output, Session};

/// What a backup copied.
#[derive(Debug, Default)]
struct Copied {
    tables: usize,
    files: usize,
    bytes: u64,
}

/// Run `BACKUP TO 'target'`.
pub(crate) async fn execute(
    engine: &Engine,
    session: &Session,
    target: &str,
) -> EngineResult<Output> {
    if !engine.privileges(session).is_superuser() {
        return Err(EngineError::statement(
            StatusCode::InsufficientPrivilege,
            "permission denied to run BACKUP: only superusers may",
        ));
    }
    let Some(folder) = engine.checked_local_path(session, target, Access::Write)? else {
        return Err(EngineError::statement(
            StatusCode::FeatureNotSupported,
            "BACKUP writes to a local folder; copy that folder to an object store afterwards",
        ));
    };
    if folder.starts_with(engine.data_dir()) && !folder.starts_with(engine.data_dir().join("files"))
    {
        return Err(EngineError::statement(
            StatusCode::InvalidParameterValue,
            "a backup cannot be written inside the data dir it copies (except its files/ folder)",
        ));
    }
    let not_empty = std::fs::read_dir(&folder).is_ok_and(|mut r| r.next().is_some());
    if not_empty {
        return Err(EngineError::statement(
            StatusCode::DuplicateObject,
            format!("backup folder '{target}' is not empty"),
        ));
    }
    let io = |what: &str, e: std::io::Error| {
        EngineError::statement(StatusCode::IoError, format!("backup {what}: {e}"))
    };
    let _ddl = engine.ddl_lock.lock().await;
    durable::create_dir_all(&folder).map_err(|e| io("folder", e))?;
    let entries = engine.catalog.entries();
    // Every local managed table, read at one instant.
    let mut tables: Vec<(String, ManagedTable)> = vec![];
    for e in &entries {
        if let TableKind::Managed { root } = &e.kind
            && !root.contains("://")
            && let Some(t) =
                crate::transaction::commit::committed_managed(engine, &e.schema, &e.name).await
        {
            tables.push((root.clone(), t));
        }
    }
    tables.sort_by(|a, b| a.1.key().cmp(b.1.key()));
    let mut manifests = vec![];
    {
        let mut locks = vec![];
        for (_, t) in &tables {
            locks.push(t.lock_commits().await);
        }
        for ((root, _), lock) in tables.iter().zip(&locks) {
            manifests.push((root.clone(), lock.latest().await?));
        }
    }
    let mut copied = Copied::default();
    for (root, manifest) in manifests {
        let from = engine.data_dir().join(&root);
        let to = folder.join(&root);
        durable::create_dir_all(&to).map_err(|e| io("table folder", e))?;
        copied.tables += 1;
        let Some(m) = manifest else { continue };
        for f in &m.files {
            copy(&from.join(&f.path), &to.join(&f.path), &mut copied)
                .map_err(|e| io("data file", e))?;
        }
        // Written from the manifest read under the locks: the file may be gone by now (a
        // commit removes the manifest two versions back).
        let target = to.join(manifest_file_name(m.version));
        if let Some(dir) = target.parent() {
            durable::create_dir_all(dir).map_err(|e| io("manifest", e))?;
        }
        let body = serde_json::to_vec(&m).map_err(|e| io("manifest", std::io::Error::other(e)))?;
        durable::write_atomically(&target, &body).map_err(|e| io("manifest", e))?;
        copied.files += 1;
        copied.bytes += body.len() as u64;
    }
    engine.catalog.backup_to(&folder)?;
    engine.roles.backup_to(&folder)?;
    copied.files += engine.registry.backup_to(&folder).await?;
    let key = engine.data_dir().join("masking.key");
    if key.exists() {
        copy(&key, &folder.join("masking.key"), &mut copied).map_err(|e| io("masking key", e))?;
    }
    session.notice(format!(
        "backup of {} table(s), {} file(s), {} MiB written to {}",
        copied.tables,
        copied.files,
        copied.bytes.div_ceil(1024 * 1024),
        folder.display()
    ));
    Ok(crate::statements::command("BACKUP"))
}

fn copy(from: &Path, to: &Path, copied: &mut Copied) -> std::io::Result<()> {
    durable::copy_file(from, to)?;
    copied.files += 1;
    copied.bytes += std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    Ok(())
}
