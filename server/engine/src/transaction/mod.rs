//! Transaction blocks: `BEGIN … COMMIT | ROLLBACK`, savepoints, and the failed state.
//!
//! Writes to managed tables inside a block (INSERT, COPY FROM, CREATE TABLE [AS], DROP TABLE)
//! are recorded as [`Change`]s of the session's block instead of being committed:
//!
//! * an insert writes its Parquet files but commits no manifest (the table is wrapped in a
//!   `StagedTable` whose sink hands the files to the block, [`TxnSlot`] being the
//!   `WriteStage`);
//! * `CREATE TABLE` builds the new table's storage, which nothing else references yet;
//! * `DROP TABLE` only hides the table.
//!
//! The session sees its own changes through the catalog overlay ([`overlay`]); other sessions
//! see none of them until COMMIT, which applies them all at once ([`commit`]). ROLLBACK, a
//! connection that closes inside a block, and `ROLLBACK TO SAVEPOINT` discard changes and
//! delete the files they wrote. A statement that fails inside a block puts it in the failed
//! state, where every statement but ROLLBACK (or COMMIT, which then rolls back) and
//! `ROLLBACK TO SAVEPOINT` is refused with `25P02`, as in PostgreSQL.
//!
//! Not transactional (they take effect at once, with a NOTICE saying so): views, external
//! tables, schemas, and model statements — training is not something to hold in a block.

pub(crate) mod commit;
pub(crate) mod overlay;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::Result as DfResult;
use prognos_catalog::{ManagedTable, TableEntry, WriteStage};
use prognos_storage::manifest::{DataFile, Manifest};

use crate::error::{EngineError, EngineResult, StatusCode};

/// One change a block made, in statement order (a savepoint is a position in this list).
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Files one statement wrote to a managed table.
    Write {
        /// The table written ([`ManagedTable::key`]).
        table: ManagedTable,
        /// The new files.
        files: Vec<DataFile>,
        /// Whether they replace the table's rows (`INSERT OVERWRITE`).
        overwrite: bool,
    },
    /// A managed table created in the block (its catalog entry is recorded at COMMIT).
    Create {
        /// The catalog entry to record.
        entry: TableEntry,
        /// The new table.
        table: ManagedTable,
        /// `CREATE OR REPLACE`: a table of that name committed meanwhile is replaced, not a
        /// conflict.
        or_replace: bool,
        /// The block made the table's storage (`CREATE TABLE`), so discarding the change
        /// deletes it; false for a rename, whose storage is the renamed table's.
        owns_storage: bool,
    },
    /// A table dropped in the block.
    Drop {
        /// Schema name.
        schema: String,
        /// Table name.
        name: String,
    },
}

impl Change {
    fn names(&self, schema: &str, name: &str) -> bool {
        match self {
            Change::Create { entry, .. } => entry.schema == schema && entry.name == name,
            Change::Drop { schema: s, name: n } => s == schema && n == name,
            Change::Write { .. } => false,
        }
    }
}

/// An open transaction block.
#[derive(Debug, Default)]
pub(crate) struct Block {
    /// A statement failed: only ROLLBACK (or ROLLBACK TO SAVEPOINT) is accepted.
    failed: bool,
    changes: Vec<Change>,
    /// Savepoints, oldest first: name and the number of changes made before it.
    savepoints: Vec<(String, usize)>,
    /// Each written table's version when the block first wrote it: the base its commit must
    /// still find, or another writer got there first (`40001`).
    bases: HashMap<String, Manifest>,
}

impl Block {
    /// Whether the table `schema.name` is created or dropped by this block, and if so what it
    /// is now: `Some(Some(table))` created, `Some(None)` dropped.
    fn named(&self, schema: &str, name: &str) -> Option<Option<ManagedTable>> {
        self.changes
            .iter()
            .rev()
            .find(|c| c.names(schema, name))
            .map(|c| match c {
                Change::Create { table, .. } => Some(table.clone()),
                _ => None,
            })
    }

    /// The files `table` holds as this block sees it, or `None` when the block has not
    /// written it.
    fn files_of(&self, table: &ManagedTable) -> Option<Vec<DataFile>> {
        let base = self.bases.get(table.key())?;
        let mut files = base.files.clone();
        let mut written = false;
        for c in &self.changes {
            if let Change::Write {
                table: t,
                files: new,
                overwrite,
            } = c
                && t.key() == table.key()
            {
                if *overwrite {
                    files.clear();
                }
                files.extend(new.iter().cloned());
                written = true;
            }
        }
        written.then_some(files)
    }

    /// Tables created in the block, for the overlay's table list.
    fn created_in(&self, schema: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Create { entry, .. } if entry.schema == schema => Some(entry.name.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|n| matches!(self.named(schema, n), Some(Some(_))))
            .collect()
    }
}

/// A session's transaction slot: `None` outside a block. Shared by the session and its
/// catalog overlay; it is also the [`WriteStage`] of the tables the overlay wraps.
#[derive(Debug, Default)]
pub(crate) struct TxnSlot {
    block: Mutex<Option<Block>>,
}

impl TxnSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Block>> {
        self.block.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a block is open.
    pub(crate) fn active(&self) -> bool {
        self.lock().is_some()
    }

    /// Whether the open block has failed.
    pub(crate) fn failed(&self) -> bool {
        self.lock().as_ref().is_some_and(|b| b.failed)
    }

    /// `BEGIN`: false when a block is open already (PostgreSQL warns and carries on).
    pub(crate) fn begin(&self) -> bool {
        let mut slot = self.lock();
        if slot.is_some() {
            return false;
        }
        *slot = Some(Block::default());
        true
    }

    /// A statement failed: the open block (if any) now refuses all but ROLLBACK.
    pub(crate) fn fail(&self) {
        if let Some(b) = self.lock().as_mut() {
            b.failed = true;
        }
    }

    /// Close the block, returning it (to commit or discard).
    pub(crate) fn take(&self) -> Option<Block> {
        self.lock().take()
    }

    /// Record a change of the open block; `false` outside a block (the caller applies it
    /// at once instead).
    pub(crate) fn record(&self, change: Change) -> bool {
        match self.lock().as_mut() {
            Some(b) => {
                b.changes.push(change);
                true
            }
            None => false,
        }
    }

    /// `SAVEPOINT name`.
    pub(crate) fn savepoint(&self, name: &str) -> EngineResult<()> {
        let mut slot = self.lock();
        let b = slot.as_mut().ok_or_else(|| outside_block("SAVEPOINT"))?;
        let at = b.changes.len();
        b.savepoints.push((name.to_string(), at));
        Ok(())
    }

    /// `RELEASE [SAVEPOINT] name`: forget it and the savepoints after it, keeping changes.
    pub(crate) fn release(&self, name: &str) -> EngineResult<()> {
        let mut slot = self.lock();
        let b = slot
            .as_mut()
            .ok_or_else(|| outside_block("RELEASE SAVEPOINT"))?;
        if b.failed {
            return Err(in_failed_block());
        }
        let i = find_savepoint(b, name)?;
        b.savepoints.truncate(i);
        Ok(())
    }

    /// `ROLLBACK TO [SAVEPOINT] name`: undo the changes after it (returned, so their files
    /// can be deleted), keep the savepoint, and leave the failed state.
    pub(crate) fn rollback_to(&self, name: &str) -> EngineResult<Vec<Change>> {
        let mut slot = self.lock();
        let b = slot
            .as_mut()
            .ok_or_else(|| outside_block("ROLLBACK TO SAVEPOINT"))?;
        let i = find_savepoint(b, name)?;
        let at = b.savepoints[i].1;
        b.savepoints.truncate(i + 1);
        b.failed = false;
        Ok(b.changes.split_off(at))
    }

    /// The provider `schema.name` resolves to in this session: the committed `provider` as
    /// changed by the open block (created, dropped, or a managed table with staged writes).
    pub(crate) fn resolve(
        self: &Arc<Self>,
        schema: &str,
        name: &str,
        committed: Option<Arc<dyn TableProvider>>,
    ) -> Option<Arc<dyn TableProvider>> {
        let slot = self.lock();
        let Some(block) = slot.as_ref() else {
            return committed;
        };
        let table = match block.named(schema, name) {
            Some(Some(created)) => created,
            Some(None) => return None,
            None => {
                let provider = committed?;
                let any: &dyn std::any::Any = provider.as_ref();
                match any.downcast_ref::<ManagedTable>() {
                    Some(t) => t.clone(),
                    None => return Some(provider),
                }
            }
        };
        let files = block.files_of(&table);
        let stage: Arc<dyn WriteStage> = Arc::clone(self) as Arc<dyn WriteStage>;
        Some(Arc::new(table.staged(files, stage)))
    }

    /// The catalog entry of a table the open block created and still has under `schema.name`.
    pub(crate) fn created_entry(&self, schema: &str, name: &str) -> Option<TableEntry> {
        let slot = self.lock();
        let block = slot.as_ref()?;
        block
            .changes
            .iter()
            .rev()
            .find(|c| c.names(schema, name))
            .and_then(|c| match c {
                Change::Create { entry, .. } => Some(entry.clone()),
                _ => None,
            })
    }

    /// Whether `schema.name` exists for this session, given whether it exists committed.
    pub(crate) fn exists(&self, schema: &str, name: &str, committed: bool) -> bool {
        match self.lock().as_ref().and_then(|b| b.named(schema, name)) {
            Some(now) => now.is_some(),
            None => committed,
        }
    }

    /// The table names of `schema` for this session, given the committed ones.
    pub(crate) fn table_names(&self, schema: &str, committed: Vec<String>) -> Vec<String> {
        let slot = self.lock();
        let Some(block) = slot.as_ref() else {
            return committed;
        };
        let mut names: Vec<String> = committed
            .into_iter()
            .filter(|n| !matches!(block.named(schema, n), Some(None)))
            .collect();
        for n in block.created_in(schema) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }
}

#[async_trait]
impl WriteStage for TxnSlot {
    async fn stage(
        &self,
        table: &ManagedTable,
        files: Vec<DataFile>,
        overwrite: bool,
    ) -> DfResult<()> {
        let known = self
            .lock()
            .as_ref()
            .map(|b| b.bases.contains_key(table.key()));
        let base = match known {
            Some(false) => Some(table.manifest().await?),
            _ => None,
        };
        let mut slot = self.lock();
        let Some(block) = slot.as_mut() else {
            // The block ended while the statement ran (a connection closing): the files are
            // not referenced by anything; leave them to the caller's error.
            return Err(datafusion::error::DataFusionError::Execution(
                "the transaction block ended while the statement ran".into(),
            ));
        };
        if let Some(base) = base {
            block.bases.entry(table.key().to_string()).or_insert(base);
        }
        block.changes.push(Change::Write {
            table: table.clone(),
            files,
            overwrite,
        });
        Ok(())
    }
}

fn find_savepoint(b: &Block, name: &str) -> EngineResult<usize> {
    b.savepoints
        .iter()
        .rposition(|(n, _)| n == name)
        .ok_or_else(|| {
            EngineError::statement(
                StatusCode::InvalidSavepoint,
                format!("savepoint \"{name}\" does not exist"),
            )
        })
}

fn outside_block(what: &str) -> EngineError {
    EngineError::statement(
        StatusCode::NoActiveTransaction,
        format!("{what} can only be used in transaction blocks"),
    )
}

/// The error of every statement but ROLLBACK in a failed block.
pub(crate) fn in_failed_block() -> EngineError {
    EngineError::statement(
        StatusCode::InFailedTransaction,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}
