//! Removing, at start-up, the local files a crash left that nothing references.
//!
//! Every write publishes its files before the catalog, a manifest or the registry names them,
//! so a crash can leave files behind but never a reference to a missing file. What can be
//! left: staged files (`name#<digits>`) of a write cut short, data files of an `INSERT` or
//! `COPY` whose manifest was never committed, the folder of a `CREATE TABLE` whose catalog entry
//! was never written, the folder of a model version the registry never recorded, and the
//! download folder of a `CREATE MODEL … FROM`. They are
//! removed when the data dir is opened — before any client connects, so no statement is
//! writing them — and each removal is logged. Tables and artifacts in object stores (S3,
//! HDFS) are left alone: their prefixes may be shared, and a listing there costs requests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;
use prognos_catalog::TableKind;
use prognos_storage::durable::{self, DurableLocalStore, is_staged_name};
use prognos_storage::manifest::TableStore;
use tracing::warn;

use crate::Engine;

/// What a start-up sweep removed.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Paths removed (files and folders).
    pub(crate) removed: Vec<PathBuf>,
}

/// Sweep the data dir of `engine` (after the catalog and registry are loaded).
pub(crate) async fn sweep(engine: &Engine) -> Swept {
    let mut swept = Swept::default();
    let data_dir = engine.data_dir();
    // Staged files of the catalog's, registry's and commit record's own atomic writes.
    staged_in(data_dir, &mut swept);
    staged_in(&data_dir.join("models"), &mut swept);
    staged_in(
        &data_dir.join(crate::transaction::commit::TXN_DIR),
        &mut swept,
    );
    tables(engine, &mut swept).await;
    models(engine, &mut swept);
    for path in &swept.removed {
        warn!(path = %path.display(), "removed a file that a crash left and nothing references");
    }
    swept
}

fn remove(path: &Path, swept: &mut Swept) {
    let removed = if path.is_dir() {
        durable::remove_dir_all(path)
    } else {
        durable::remove_file(path)
    };
    match removed {
        Ok(()) => swept.removed.push(path.to_path_buf()),
        Err(e) => warn!(path = %path.display(), error = %e, "could not remove an orphan file"),
    }
}

fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return vec![];
    };
    read.filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

/// Remove staged files directly in `dir`.
fn staged_in(dir: &Path, swept: &mut Swept) {
    for (name, path) in entries(dir) {
        if is_staged_name(&name) && path.is_file() {
            remove(&path, swept);
        }
    }
}

/// Local table folders: those the catalog does not name, and inside the others the data files
/// their latest manifest does not list.
async fn tables(engine: &Engine, swept: &mut Swept) {
    let data_dir = engine.data_dir();
    let roots: BTreeSet<PathBuf> = engine
        .catalog
        .entries()
        .into_iter()
        .filter_map(|e| match e.kind {
            TableKind::Managed { root } if !root.contains("://") => Some(data_dir.join(root)),
            _ => None,
        })
        .collect();
    for (_, schema_dir) in entries(&data_dir.join("tables")) {
        for (_, folder) in entries(&schema_dir) {
            if !roots.contains(&folder) {
                remove(&folder, swept);
            }
        }
    }
    for root in &roots {
        inside_table(root, swept).await;
    }
}

async fn inside_table(root: &Path, swept: &mut Swept) {
    let Ok(object_root) = ObjectPath::from_absolute_path(root) else {
        return;
    };
    let store = TableStore::new(std::sync::Arc::new(DurableLocalStore::new()), object_root);
    let listed: BTreeSet<PathBuf> = match store.latest().await {
        Ok(Some(m)) => m.files.iter().map(|f| root.join(&f.path)).collect(),
        Ok(None) => BTreeSet::new(),
        // An unreadable manifest is reported when the table is opened; touch nothing.
        Err(_) => return,
    };
    staged_in(&root.join("_manifest"), swept);
    for (name, path) in entries(&root.join(prognos_storage::manifest::DATA_DIR)) {
        if is_staged_name(&name) || (path.is_file() && !listed.contains(&path)) {
            remove(&path, swept);
        }
    }
}

/// Local model folders and version folders the registry does not record.
fn models(engine: &Engine, swept: &mut Swept) {
    let models_dir = engine.data_dir().join("models");
    let registry = engine.registry.entries();
    // Downloads of `CREATE MODEL … FROM` that a crash cut short.
    for (_, path) in entries(&models_dir.join(".incoming")) {
        remove(&path, swept);
    }
    for (name, path) in entries(&models_dir) {
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        let Some(entry) = registry.iter().find(|e| e.name == name) else {
            remove(&path, swept);
            continue;
        };
        let recorded: BTreeSet<String> = entry
            .versions
            .iter()
            .filter_map(|v| v.artifact.split('/').nth(1).map(str::to_string))
            .collect();
        for (version, folder) in entries(&path) {
            if is_staged_name(&version) || (folder.is_dir() && !recorded.contains(&version)) {
                remove(&folder, swept);
            } else if folder.is_dir() {
                staged_in(&folder, swept);
            }
        }
    }
}
