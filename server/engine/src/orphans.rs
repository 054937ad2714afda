//! Removing, at start-up, the local files a crash left that nothing references.
//!
//! Every write publishes its files before the catalog, a manifest or the registry names them,
//! so a crash can leave files behind but never a reference to a missing file. What can be
//! left: staged files (`name#<digits>`) of a write cut short, data files of an `INSERT` or
//! `COPY` whose manifest was never committed, the folder of a `CREATE TABLE` whose catalog entry
//! was never written, the folder of a model version the registry never recorded, and the
//! download folder of a `CREATE MODEL … FROM`. They are removed when the data dir is opened —
//! before any client connects, so no statement is writing them — and each removal is logged.
//! Tables and artifacts in object stores (S3, HDFS) are left alone: their prefixes may be
//! shared, and a listing there costs requests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use prognos_catalog::TableKind;
use prognos_storage::durable::{self, is_staged_name};
use prognos_storage::manifest::DATA_DIR;
use tracing::warn;

use crate::Engine;
use crate::transaction::commit::{TXN_DIR, committed_managed};

/// Sweep the data dir of `engine` (after the catalog is restored and the registry loaded).
pub(crate) async fn sweep(engine: &Engine) {
    let data_dir = engine.data_dir();
    // Staged files of the catalog's, registry's and commit record's own atomic writes.
    staged_in(data_dir);
    staged_in(&data_dir.join("models"));
    staged_in(&data_dir.join(TXN_DIR));
    tables(engine).await;
    models(engine);
}

fn remove(path: &Path) {
    let removed = if path.is_dir() {
        durable::remove_dir_all(path)
    } else {
        durable::remove_file(path)
    };
    match removed {
        Ok(()) => {
            warn!(path = %path.display(), "removed a file that a crash left and nothing references");
        }
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
fn staged_in(dir: &Path) {
    for (name, path) in entries(dir) {
        if is_staged_name(&name) && path.is_file() {
            remove(&path);
        }
    }
}

/// Local table folders: those the catalog does not name, and inside the others the data files
/// their latest manifest does not list and the manifests before the newest two.
async fn tables(engine: &Engine) {
    let data_dir = engine.data_dir();
    let mut roots = BTreeSet::new();
    for entry in engine.catalog.entries() {
        let TableKind::Managed { root } = entry.kind else {
            continue;
        };
        if root.contains("://") {
            continue;
        }
        let root = data_dir.join(root);
        // The manifest the restored table holds (a table that could not be restored is left
        // as it is: its error is reported when it is opened).
        if let Some(table) = committed_managed(engine, &entry.schema, &entry.name).await
            && let Ok(manifest) = table.manifest().await
        {
            let listed: BTreeSet<PathBuf> =
                manifest.files.iter().map(|f| root.join(&f.path)).collect();
            staged_in(&root.join("_manifest"));
            match table.table_store().remove_all_superseded().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(table = %entry.name, manifests = n, "removed superseded manifests")
                }
                Err(e) => {
                    warn!(error = %e, table = %entry.name, "could not remove superseded manifests")
                }
            }
            for (name, path) in entries(&root.join(DATA_DIR)) {
                if is_staged_name(&name) || (path.is_file() && !listed.contains(&path)) {
                    remove(&path);
                }
            }
        }
        roots.insert(root);
    }
    for (_, schema_dir) in entries(&data_dir.join("tables")) {
        for (_, folder) in entries(&schema_dir) {
            if !roots.contains(&folder) {
                remove(&folder);
            }
        }
    }
}

/// Local model folders and version folders the registry does not record.
fn models(engine: &Engine) {
    let models_dir = engine.data_dir().join("models");
    let registry = engine.registry.entries();
    // Downloads of `CREATE MODEL … FROM` that a crash cut short.
    for (_, path) in entries(&models_dir.join(".incoming")) {
        remove(&path);
    }
    for (name, path) in entries(&models_dir) {
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        let Some(entry) = registry.iter().find(|e| e.name == name) else {
            remove(&path);
            continue;
        };
        let recorded: BTreeSet<String> = entry
            .versions
            .iter()
            .filter_map(|v| v.artifact.split('/').nth(1).map(str::to_string))
            .collect();
        for (version, folder) in entries(&path) {
            if is_staged_name(&version) || (folder.is_dir() && !recorded.contains(&version)) {
                remove(&folder);
            } else if folder.is_dir() {
                staged_in(&folder);
            }
        }
    }
}
