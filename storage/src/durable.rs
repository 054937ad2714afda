//! Local files that survive a power loss once the call that wrote them returns.
//!
//! `object_store`'s `LocalFileSystem` never calls `fsync`: a file it wrote and renamed into
//! place can be missing or empty after a power loss, even though the statement that wrote it
//! was acknowledged. [`DurableLocalStore`] is that store with every write made durable —
//! written to a staged name, synced, published by rename (or hard link for create-only puts),
//! and its directory synced — and the functions below do the same for the catalog's own files.
//! Every step goes through [`crate::fs_steps::step`], so it is recorded for the power-loss
//! proof and is a crash point for the crash tests.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use crate::fs_steps::{FsStep, step};

/// Flush a file's bytes to stable storage.
pub fn sync_file(path: &FsPath) -> std::io::Result<()> {
    step(FsStep::SyncFile(path.to_path_buf()));
    std::fs::File::open(path)?.sync_all()
}

/// Flush a directory's entries (names created, renamed or removed in it) to stable storage.
pub fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    step(FsStep::SyncDir(dir.to_path_buf()));
    std::fs::File::open(dir)?.sync_all()
}

/// Create `dir` and its missing parents so that they survive a power loss: each directory
/// made is followed by a sync of its parent.
pub fn create_dir_all(dir: &FsPath) -> std::io::Result<()> {
    let missing: Vec<&FsPath> = dir.ancestors().take_while(|a| !a.exists()).collect();
    for d in missing.into_iter().rev() {
        step(FsStep::MakeDir(d.to_path_buf()));
        match std::fs::create_dir(d) {
            Ok(()) => {}
            // Another writer made it meanwhile.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Replace the file at `path` with `bytes` so that a crash or power loss leaves the old or
/// the new file: write a temporary file beside it, sync it, rename it over, sync the directory.
/// The folder must exist (a missing one is an error, as `COPY … TO` a missing folder is).
pub fn write_atomically(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_staged(path, [bytes])?;
    publish_staged(&tmp, path, false)
}

/// Write `chunks` to a new staged name beside `dest` and sync it; the staged name. Nothing is
/// left behind when it fails.
fn write_staged<'a>(
    dest: &FsPath,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> std::io::Result<PathBuf> {
    let tmp = staged_name(dest);
    step(FsStep::Write(tmp.clone()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        for chunk in chunks {
            f.write_all(chunk)?;
        }
        step(FsStep::SyncFile(tmp.clone()));
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Copy the file `from` to `to` (a new name) durably.
pub fn copy_file(from: &FsPath, to: &FsPath) -> std::io::Result<()> {
    if let Some(dir) = to.parent() {
        create_dir_all(dir)?;
    }
    let tmp = staged_name(to);
    step(FsStep::Write(tmp.clone()));
    if let Err(e) = std::fs::copy(from, &tmp).and_then(|_| sync_file(&tmp)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    publish_staged(&tmp, to, false)
}

/// Remove a folder and everything in it (a removal need not be synced: what a power loss
/// brings back is referenced by nothing and removed as an orphan at the next start).
pub fn remove_dir_all(dir: &FsPath) -> std::io::Result<()> {
    step(FsStep::Remove(dir.to_path_buf()));
    std::fs::remove_dir_all(dir)
}

/// Remove one file.
pub fn remove_file(path: &FsPath) -> std::io::Result<()> {
    step(FsStep::Remove(path.to_path_buf()));
    std::fs::remove_file(path)
}

/// [`publish_file`] for a staged file of our own: on failure it is removed.
fn publish_staged(staged: &FsPath, dest: &FsPath, create_only: bool) -> std::io::Result<()> {
    publish_file(staged, dest, create_only).inspect_err(|_| {
        let _ = std::fs::remove_file(staged);
    })
}

/// Give the synced file `staged` its final name `dest` — by rename, or with `create_only` by
/// hard link, which fails with `AlreadyExists` if `dest` exists — then sync the directory.
fn publish_file(staged: &FsPath, dest: &FsPath, create_only: bool) -> std::io::Result<()> {
    step(FsStep::Publish {
        from: staged.to_path_buf(),
        to: dest.to_path_buf(),
    });
    if create_only {
        std::fs::hard_link(staged, dest)?;
        // `dest` is published: a staged name that stays behind is removed at the next start.
        let _ = std::fs::remove_file(staged);
    } else {
        std::fs::rename(staged, dest)?;
    }
    match dest.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// A staged name beside `path`: `name#<n>`, the form `LocalFileSystem` uses for its own
/// staged uploads and leaves out of listings. Start-up removes any that a crash left.
fn staged_name(path: &FsPath) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!("#{}{n}", std::process::id()));
    name.into()
}

/// Whether a file name is a staged upload (`name#<digits>`) a crash may have left behind.
pub fn is_staged_name(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((_, digits)) => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// `LocalFileSystem` (absolute paths, as `file://` URLs name them) whose writes are durable.
/// Reads, listings and deletes are `LocalFileSystem`'s own.
#[derive(Debug)]
pub struct DurableLocalStore {
    inner: LocalFileSystem,
}

impl Default for DurableLocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl DurableLocalStore {
    /// The store over the whole local file system.
    pub fn new() -> Self {
        Self {
            inner: LocalFileSystem::new(),
        }
    }

    fn fs_path(&self, location: &Path) -> object_store::Result<PathBuf> {
        self.inner.path_to_filesystem(location)
    }
}

impl fmt::Display for DurableLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DurableLocalStore")
    }
}

fn io_error(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "DurableLocalStore",
        source: format!("{}: {source}", path.display()).into(),
    }
}

/// The e-tag `LocalFileSystem` reports for the file, so conditional reads agree with it.
fn e_tag(path: &FsPath) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    Some(format!("{:x}-{mtime:x}-{:x}", m.ino(), m.len()))
}

/// A publish of `dest` as the store reports it: `AlreadyExists` for a create-only put that
/// lost, and the new object's e-tag.
fn put_result(published: std::io::Result<()>, dest: &FsPath) -> object_store::Result<PutResult> {
    published.map_err(|source| {
        if source.kind() == ErrorKind::AlreadyExists {
            object_store::Error::AlreadyExists {
                path: dest.display().to_string(),
                source: Box::new(source),
            }
        } else {
            io_error(dest, source)
        }
    })?;
    Ok(PutResult {
        e_tag: e_tag(dest),
        version: None,
    })
}

#[async_trait]
impl ObjectStore for DurableLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create_only = match opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "`put_opts` with mode `PutMode::Update`".into(),
                    implementer: self.to_string(),
                });
            }
        };
        let dest = self.fs_path(location)?;
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = dest.parent() {
                create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            }
            let staged = write_staged(&dest, payload.iter().map(|c| c.as_ref()))
                .map_err(|e| io_error(&dest, e))?;
            put_result(publish_staged(&staged, &dest, create_only), &dest)
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let dest = self.fs_path(location)?;
        let staged = staged_name(&dest);
        let file = {
            let (dest, staged) = (dest.clone(), staged.clone());
            tokio::task::spawn_blocking(move || {
                if let Some(dir) = dest.parent() {
                    create_dir_all(dir).map_err(|e| io_error(dir, e))?;
                }
                step(FsStep::Write(staged.clone()));
                std::fs::File::create(&staged).map_err(|e| io_error(&staged, e))
            })
            .await
            .map_err(|e| object_store::Error::JoinError { source: e })??
        };
        Ok(Box::new(DurableUpload {
            file: Arc::new(Mutex::new(Some(file))),
            staged,
            dest,
            offset: 0,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        use futures::StreamExt;
        let local = LocalFileSystem::new();
        let noted = locations.map(move |l| {
            if let Ok(path) = l.as_ref().map(|l| local.path_to_filesystem(l))
                && let Ok(path) = path
            {
                step(FsStep::Remove(path));
            }
            l
        });
        self.inner.delete_stream(noted.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        let (src, dest) = (self.fs_path(from)?, self.fs_path(to)?);
        tokio::task::spawn_blocking(move || copy_file(&src, &dest).map_err(|e| io_error(&dest, e)))
            .await
            .map_err(|e| object_store::Error::JoinError { source: e })?
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let (src, dest) = (self.fs_path(from)?, self.fs_path(to)?);
        let create_only = matches!(options.target_mode, object_store::RenameTargetMode::Create);
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = dest.parent() {
                create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            }
            put_result(publish_file(&src, &dest, create_only), &dest).map(|_| ())
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }
}

/// A multipart upload written into a staged file at each part's offset, synced and published
/// on `complete`.
#[derive(Debug)]
struct DurableUpload {
    file: Arc<Mutex<Option<std::fs::File>>>,
    staged: PathBuf,
    dest: PathBuf,
    offset: u64,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let file = Arc::clone(&self.file);
        let staged = self.staged.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let guard = file.lock().unwrap_or_else(|p| p.into_inner());
                let f = guard.as_ref().ok_or_else(|| {
                    io_error(&staged, std::io::Error::other("the upload is finished"))
                })?;
                let mut at = offset;
                for chunk in data.iter() {
                    f.write_all_at(chunk, at)
                        .map_err(|e| io_error(&staged, e))?;
                    at += chunk.len() as u64;
                }
                Ok(())
            })
            .await
            .map_err(|e| object_store::Error::JoinError { source: e })?
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let file = Arc::clone(&self.file);
        let (staged, dest) = (self.staged.clone(), self.dest.clone());
        tokio::task::spawn_blocking(move || {
            let f = file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or_else(|| {
                    io_error(&staged, std::io::Error::other("the upload is finished"))
                })?;
            step(FsStep::SyncFile(staged.clone()));
            f.sync_all().map_err(|e| io_error(&staged, e))?;
            drop(f);
            put_result(publish_staged(&staged, &dest, false), &dest)
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).take();
        let staged = self.staged.clone();
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&staged) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&staged, e)),
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_steps::{Recorder, Survival, durable_image};
    use crate::manifest::{ColumnDef, TableStore};
    use crate::parquet_files::write_data_files;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    fn table(dir: &FsPath) -> TableStore {
        let root = Path::from_absolute_path(dir.join("tables/public/t")).expect("root");
        TableStore::new(Arc::new(DurableLocalStore::new()), root)
    }

    #[tokio::test]
    async fn a_commit_and_its_data_files_survive_power_loss_once_it_returns() {
        let dir = tempfile::tempdir().expect("tmp");
        let dir = dir.path().canonicalize().expect("canonical");
        let recorder = Recorder::under(&dir);
        let store = table(&dir);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..10_000))],
        )
        .expect("batch");
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::iter(vec![Ok(batch)]),
        ));
        let files = write_data_files(&store, stream, 1 << 20)
            .await
            .expect("write");
        let columns: Vec<ColumnDef> = crate::manifest::schema_to_columns(&schema);
        let manifest = store
            .commit(0, columns, files.clone())
            .await
            .expect("commit");
        let image = durable_image(&recorder.steps());
        let mut acknowledged: Vec<PathBuf> = files
            .iter()
            .map(|f| dir.join("tables/public/t").join(&f.path))
            .collect();
        acknowledged.push(dir.join(format!(
            "tables/public/t/_manifest/v{:020}.json",
            manifest.version
        )));
        for path in &acknowledged {
            assert_eq!(
                image.get(path),
                Some(&Survival::Complete),
                "{} is not certain to survive: {:?}",
                path.display(),
                recorder.steps()
            );
        }
        // And the store reads back what it wrote.
        let latest = store.latest().await.expect("read").expect("manifest");
        assert_eq!(latest.rows(), 10_000);
        let listed: Vec<_> = store
            .store()
            .list(Some(store.root()))
            .try_collect()
            .await
            .expect("list");
        assert_eq!(listed.len(), acknowledged.len(), "{listed:?}");
    }

    #[tokio::test]
    async fn a_create_only_put_refuses_an_existing_object() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = DurableLocalStore::new();
        let path = Path::from_absolute_path(dir.path().join("a/b.json")).expect("path");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store
            .put_opts(&path, PutPayload::from_static(b"1"), create.clone())
            .await
            .expect("first");
        let e = store
            .put_opts(&path, PutPayload::from_static(b"2"), create)
            .await
            .expect_err("exists");
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
        let bytes = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&bytes[..], b"1");
        // No staged file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn atomic_writes_are_synced_before_and_after_the_rename() {
        let dir = tempfile::tempdir().expect("tmp");
        let dir = dir.path().canonicalize().expect("canonical");
        let recorder = Recorder::under(&dir);
        let path = dir.join("sub/catalog.json");
        create_dir_all(&dir.join("sub")).expect("folder");
        write_atomically(&path, b"{}").expect("write");
        write_atomically(&path, b"{\"a\":1}").expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"{\"a\":1}");
        assert_eq!(
            durable_image(&recorder.steps()).get(&path),
            Some(&Survival::Complete)
        );
    }

    #[test]
    fn staged_names_are_recognised() {
        assert!(is_staged_name("part-0.parquet#12"));
        assert!(!is_staged_name("part-0.parquet"));
        assert!(!is_staged_name("a#b"));
        assert!(!is_staged_name("a#"));
    }

    #[tokio::test]
    async fn a_multipart_upload_is_published_whole_and_synced() {
        let dir = tempfile::tempdir().expect("tmp");
        let dir = dir.path().canonicalize().expect("canonical");
        let recorder = Recorder::under(&dir);
        let store = DurableLocalStore::new();
        let path = Path::from_absolute_path(dir.join("t/data/big.parquet")).expect("path");
        let mut upload = store
            .put_multipart_opts(&path, PutMultipartOptions::default())
            .await
            .expect("start");
        let first = upload.put_part(PutPayload::from(vec![1u8; 1000]));
        let second = upload.put_part(PutPayload::from(vec![2u8; 500]));
        // Parts may finish in any order; each lands at its own offset.
        second.await.expect("second");
        first.await.expect("first");
        assert!(
            !dir.join("t/data/big.parquet").exists(),
            "not visible before complete"
        );
        upload.complete().await.expect("complete");
        let bytes = std::fs::read(dir.join("t/data/big.parquet")).expect("read");
        assert_eq!(bytes.len(), 1500);
        assert!(bytes[..1000].iter().all(|b| *b == 1) && bytes[1000..].iter().all(|b| *b == 2));
        assert_eq!(
            durable_image(&recorder.steps()).get(&dir.join("t/data/big.parquet")),
            Some(&Survival::Complete)
        );
    }
}
