//! COMMIT and ROLLBACK of a transaction block, and crash recovery of a commit cut short.
//!
//! A commit holds the engine's DDL lock and the commit lock of every table it writes, checks
//! that each table is still at the version the block first wrote it on (else `40001`, and the
//! block is discarded), writes a commit record (`_txn/commit.json` in the data dir), then
//! commits the tables' manifests, applies the catalog changes in one atomic catalog write,
//! publishes the new tables to the other sessions and deletes the record. A process killed
//! after the record was written and before it was deleted finishes the commit when the data
//! dir is opened again ([`recover`]); one killed before leaves nothing visible, only files no
//! manifest references.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::{SchemaProvider, TableProvider};
use object_store::ObjectStoreExt;
use prognos_catalog::{CommitLock, ManagedTable, TableEntry, TableKind};
use prognos_storage::manifest::{DataFile, Manifest};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Block, Change};
use crate::error::{EngineError, EngineResult, StatusCode};
use crate::{CATALOG_NAME, Engine};

/// Folder of the data dir holding the record of a commit in progress.
pub(crate) const TXN_DIR: &str = "_txn";
const RECORD_FILE: &str = "commit.json";

/// What a commit applies, written before it starts applying it.
#[derive(Debug, Serialize, Deserialize)]
struct CommitRecord {
    /// New versions of managed tables.
    writes: Vec<RecordedWrite>,
    /// Catalog entries removed (`schema`, `name`), before `creates` are added.
    drops: Vec<(String, String)>,
    /// Catalog entries added.
    creates: Vec<TableEntry>,
}

/// One table's new version in a [`CommitRecord`].
#[derive(Debug, Serialize, Deserialize)]
struct RecordedWrite {
    /// The table's root as the catalog stores it.
    root: String,
    /// The version the new one follows.
    base_version: u64,
    /// The new version's files.
    files: Vec<DataFile>,
}

/// A table name: schema and name.
type Name = (String, String);

/// A table the block created and keeps.
#[derive(Clone)]
struct Created {
    entry: TableEntry,
    table: ManagedTable,
    /// `CREATE OR REPLACE`.
    or_replace: bool,
}

/// What each name the block created or dropped is at its end: `None` dropped.
type Finals = HashMap<Name, Option<Created>>;

/// One table's new version, ready to commit.
struct PlannedWrite {
    table: ManagedTable,
    root: String,
    base: Manifest,
    files: Vec<DataFile>,
}

impl Block {
    /// The block's changes (to discard them).
    pub(crate) fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// Whether the block failed (COMMIT then rolls back).
    pub(crate) fn is_failed(&self) -> bool {
        self.failed
    }
}

/// Commit `block` (see the module docs).
pub(crate) async fn commit(engine: &Engine, block: Block) -> EngineResult<()> {
    let Block { changes, bases, .. } = block;
    let _ddl = engine.ddl_lock.lock().await;

    // The final state of each name the block created or dropped, in first-touched order.
    let mut order: Vec<Name> = vec![];
    let mut finals: Finals = HashMap::new();
    let mut dropped_first: HashSet<Name> = HashSet::new();
    let mut superseded: Vec<ManagedTable> = vec![];
    for c in &changes {
        let (k, now) = match c {
            Change::Create {
                entry,
                table,
                or_replace,
                ..
            } => (
                (entry.schema.clone(), entry.name.clone()),
                Some(Created {
                    entry: entry.clone(),
                    table: table.clone(),
                    or_replace: *or_replace,
                }),
            ),
            Change::Drop { schema, name } => ((schema.clone(), name.clone()), None),
            Change::Write { .. } => continue,
        };
        match finals.insert(k.clone(), now) {
            None => {
                if c_is_drop(c) {
                    dropped_first.insert(k.clone());
                }
                order.push(k);
            }
            Some(Some(earlier)) => superseded.push(earlier.table),
            Some(None) => {}
        }
    }

    // Tables the block ends with (a renamed table is dropped under one name and created under
    // another: its storage stays).
    let alive: HashSet<String> = finals
        .values()
        .flatten()
        .map(|c| c.table.key().to_string())
        .collect();
    superseded.retain(|t| !alive.contains(t.key()));
    // Committed tables the block drops or replaces: their storage goes after the commit, and
    // writes to them are moot.
    let mut dead: HashSet<String> = superseded.iter().map(|t| t.key().to_string()).collect();
    let mut replaced: Vec<ManagedTable> = vec![];
    for (schema, name) in &order {
        if let Some(t) = committed_managed(engine, schema, name).await
            && !alive.contains(t.key())
        {
            dead.insert(t.key().to_string());
            replaced.push(t);
        }
    }
    for (k, now) in &finals {
        if let Some(created) = now
            && !created.or_replace
            && !dropped_first.contains(k)
            && engine.catalog.get(&k.0, &k.1).is_some()
        {
            discard(changes).await;
            return Err(EngineError::statement(
                StatusCode::SerializationFailure,
                format!(
                    "could not serialize access: relation \"{}\" was created by another \
                     transaction",
                    k.1
                ),
            ));
        }
    }

    // Each written table's files as the block leaves them.
    let roots = table_roots(engine, &finals);
    let mut writes: Vec<PlannedWrite> = vec![];
    let mut unknown: Option<String> = None;
    for c in &changes {
        let Change::Write {
            table,
            files,
            overwrite,
        } = c
        else {
            continue;
        };
        if dead.contains(table.key()) {
            continue;
        }
        let i = match writes.iter().position(|w| w.table.key() == table.key()) {
            Some(i) => i,
            None => {
                let (Some(base), Some(root)) = (bases.get(table.key()), roots.get(table.key()))
                else {
                    unknown = Some(table.name().to_string());
                    break;
                };
                writes.push(PlannedWrite {
                    table: table.clone(),
                    root: root.clone(),
                    base: base.clone(),
                    files: base.files.clone(),
                });
                writes.len() - 1
            }
        };
        if *overwrite {
            writes[i].files.clear();
        }
        writes[i].files.extend(files.iter().cloned());
    }
    if let Some(name) = unknown {
        discard(changes).await;
        return Err(EngineError::statement(
            StatusCode::Internal,
            format!("table \"{name}\" written in the block is not in the catalog"),
        ));
    }
    writes.sort_by(|a, b| a.table.key().cmp(b.table.key()));

    // No other writer of these tables until the commit is done; each must still be where
    // the block found it.
    let mut locks: Vec<CommitLock> = Vec::with_capacity(writes.len());
    for w in &writes {
        let lock = w.table.lock_commits().await;
        let latest = lock.latest().await?.map(|m| m.version).unwrap_or(0);
        if latest != w.base.version {
            drop(locks);
            discard(changes).await;
            return Err(EngineError::statement(
                StatusCode::SerializationFailure,
                format!(
                    "could not serialize access due to concurrent update of \"{}\"",
                    w.table.name()
                ),
            ));
        }
        locks.push(lock);
    }

    // Privileges follow a table renamed in the block and leave one it dropped.
    let mut privilege_moves: Vec<(Name, Option<Name>)> = vec![];
    for k in &order {
        if !matches!(finals.get(k), Some(None)) {
            continue;
        }
        let renamed_to = match committed_managed(engine, &k.0, &k.1).await {
            Some(t) => finals.iter().find_map(|(new, c)| {
                c.as_ref()
                    .filter(|c| c.table.key() == t.key())
                    .map(|_| new.clone())
            }),
            None => None,
        };
        privilege_moves.push((k.clone(), renamed_to));
    }

    let drops: Vec<Name> = order.clone();
    let creates: Vec<TableEntry> = order
        .iter()
        .filter_map(|k| finals.get(k).cloned().flatten().map(|c| c.entry))
        .collect();
    let record = CommitRecord {
        writes: writes
            .iter()
            .map(|w| RecordedWrite {
                root: w.root.clone(),
                base_version: w.base.version,
                files: w.files.clone(),
            })
            .collect(),
        drops: drops.clone(),
        creates: creates.clone(),
    };
    let record_path = write_record(&engine.data_dir, &record)?;

    for (w, lock) in writes.iter().zip(&locks) {
        lock.commit(w.base.version, w.files.clone()).await?;
    }
    engine.catalog.apply(&drops, &creates)?;
    for (old, new) in privilege_moves {
        let old = prognos_catalog::Securable::table(&old.0, &old.1);
        match new {
            Some(new) => {
                let new = prognos_catalog::Securable::table(&new.0, &new.1);
                if let Err(e) = engine.rename_object(&old, new) {
                    warn!(error = %e, "the privileges of a renamed table could not follow it");
                }
            }
            None => engine.forget_object(&old),
        }
    }
    publish(engine, &order, &finals)?;
    drop(locks);
    if let Err(e) = prognos_storage::durable::remove_file(&record_path) {
        warn!(error = %e, "could not remove the commit record; it is replayed (harmlessly) at the next start");
    }
    // Names changed only when tables were created, dropped or renamed; a block that only
    // wrote rows leaves prepared plans valid (their scans check the tables' versions).
    if !order.is_empty() {
        engine.bump_epoch();
    }

    // What nothing references any more.
    let mut garbage: Vec<Garbage> = replaced
        .into_iter()
        .chain(superseded)
        .map(Garbage::Table)
        .collect();
    for c in changes {
        if let Change::Write { table, files, .. } = c
            && dead.contains(table.key())
        {
            garbage.push(Garbage::Files(table, files));
        }
    }
    delete_in_background(garbage);
    Ok(())
}

fn c_is_drop(c: &Change) -> bool {
    matches!(c, Change::Drop { .. })
}

/// The committed managed table `schema.name`, if there is one.
pub(crate) async fn committed_managed(
    engine: &Engine,
    schema: &str,
    name: &str,
) -> Option<ManagedTable> {
    let provider: Arc<dyn TableProvider> = shared_schema(engine, schema)
        .ok()?
        .table(name)
        .await
        .ok()??;
    let any: &dyn std::any::Any = provider.as_ref();
    any.downcast_ref::<ManagedTable>().cloned()
}

/// Catalog roots of the managed tables a commit may write, by [`ManagedTable::key`].
fn table_roots(engine: &Engine, finals: &Finals) -> HashMap<String, String> {
    let mut roots = HashMap::new();
    let entries = engine
        .catalog
        .entries()
        .into_iter()
        .chain(finals.values().flatten().map(|c| c.entry.clone()));
    for e in entries {
        if let TableKind::Managed { root } = &e.kind {
            roots.insert(crate::statements::managed_url(engine, root), root.clone());
        }
    }
    roots
}

/// The shared (not session) provider of `schema`, created when missing.
pub(crate) fn shared_schema(
    engine: &Engine,
    schema: &str,
) -> EngineResult<Arc<dyn SchemaProvider>> {
    crate::statements::schema_in(engine.base.catalog_list().catalog(CATALOG_NAME), schema)
}

/// Make the committed names resolve for every session.
fn publish(engine: &Engine, order: &[Name], finals: &Finals) -> EngineResult<()> {
    for k in order {
        let schema = shared_schema(engine, &k.0)?;
        schema.deregister_table(&k.1)?;
        if let Some(Some(created)) = finals.get(k) {
            schema.register_table(k.1.clone(), Arc::new(created.table.clone()))?;
        }
    }
    Ok(())
}

fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TXN_DIR).join(RECORD_FILE)
}

/// Write the commit record atomically (temporary file, fsync, rename).
fn write_record(data_dir: &Path, record: &CommitRecord) -> EngineResult<PathBuf> {
    let io = |e: std::io::Error| {
        EngineError::statement(StatusCode::IoError, format!("commit record: {e}"))
    };
    let path = record_path(data_dir);
    prognos_storage::durable::create_dir_all(&data_dir.join(TXN_DIR)).map_err(io)?;
    let body = serde_json::to_vec_pretty(record)
        .map_err(|e| EngineError::statement(StatusCode::Internal, format!("commit record: {e}")))?;
    prognos_storage::durable::write_atomically(&path, &body).map_err(io)?;
    Ok(path)
}

/// Finish a commit that a crash cut short: commit each recorded table version that is not
/// there yet, apply the catalog changes again (applying them twice is harmless), then remove
/// the record. Runs when the data dir is opened, before the catalog is restored.
pub(crate) async fn recover(engine: &Engine) -> EngineResult<()> {
    let path = record_path(&engine.data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(EngineError::statement(
                StatusCode::IoError,
                format!("commit record {}: {e}", path.display()),
            ));
        }
    };
    let record: CommitRecord = serde_json::from_slice(&bytes).map_err(|e| {
        EngineError::statement(
            StatusCode::DataCorrupted,
            format!("commit record {}: {e}", path.display()),
        )
    })?;
    for w in &record.writes {
        let store = crate::statements::managed_store(engine, &w.root)?;
        let latest = store.latest().await?;
        match latest {
            Some(m) if m.version == w.base_version => {
                store
                    .commit(w.base_version, m.columns, w.files.clone())
                    .await?;
            }
            Some(m) if m.version == w.base_version + 1 => {}
            other => warn!(
                root = %w.root,
                found = ?other.map(|m| m.version),
                base = w.base_version,
                "commit record: the table is not at the version the commit followed; left as it is"
            ),
        }
    }
    engine.catalog.apply(&record.drops, &record.creates)?;
    tracing::info!(
        tables = record.writes.len(),
        "finished a transaction commit interrupted by a crash"
    );
    prognos_storage::durable::remove_file(&path)
        .map_err(|e| EngineError::statement(StatusCode::IoError, format!("commit record: {e}")))?;
    Ok(())
}

/// Storage that nothing references any more.
enum Garbage {
    /// Data files of a table that no manifest lists.
    Files(ManagedTable, Vec<DataFile>),
    /// A whole table's storage.
    Table(ManagedTable),
}

/// What discarded changes leave behind: the staged files of writes, the storage of tables
/// created in the block.
fn garbage_of(changes: Vec<Change>) -> Vec<Garbage> {
    changes
        .into_iter()
        .filter_map(|c| match c {
            Change::Write { table, files, .. } => Some(Garbage::Files(table, files)),
            Change::Create {
                table,
                owns_storage: true,
                ..
            } => Some(Garbage::Table(table)),
            Change::Create { .. } => None,
            Change::Drop { .. } => None,
        })
        .collect()
}

/// Delete `garbage`. Best effort: what is left behind is referenced by no manifest.
async fn delete(garbage: Vec<Garbage>) {
    for g in garbage {
        match g {
            Garbage::Files(table, files) => {
                let store = table.table_store();
                for f in files {
                    if let Err(e) = store.store().delete(&store.child(&f.path)).await {
                        warn!(error = %e, file = %f.path, "could not delete a discarded data file");
                    }
                }
            }
            Garbage::Table(table) => {
                if let Err(e) = table.table_store().delete_all().await {
                    warn!(error = %e, table = %table.name(), "could not delete a discarded table");
                }
            }
        }
    }
}

fn delete_in_background(garbage: Vec<Garbage>) {
    if garbage.is_empty() {
        return;
    }
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(delete(garbage));
    }
}

/// Undo `changes`: delete what they wrote.
pub(crate) async fn discard(changes: Vec<Change>) {
    delete(garbage_of(changes)).await;
}

/// [`discard`] on the current tokio runtime, without waiting (a session closing).
pub(crate) fn discard_in_background(changes: Vec<Change>) {
    delete_in_background(garbage_of(changes));
}
