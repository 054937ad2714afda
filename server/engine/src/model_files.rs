//! Where a model file named in SQL lives: `CREATE MODEL … FROM` and `EXPORT MODEL … TO` take a
//! local path (relative ones from the data dir's `files/` folder, as COPY's are; other roles
//! than superusers only inside the folders [`crate::server_files`] allows), a `file://` URL, or
//! a URL of an object store the server has credentials for (`s3://`, `hdfs://`, …).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use crate::Engine;
use crate::error::{EngineError, EngineResult};
use crate::server_files::Access;
use crate::session::Session;

/// A resolved model file location.
pub(crate) enum FileLocation {
    /// A file on the server's disk.
    Local(PathBuf),
    /// An object in a store.
    Store(Arc<dyn ObjectStore>, ObjectPath),
}

/// Resolve `text` (as written in the statement) for `access` by the session's role; a
/// location that cannot be reached fails with `unreachable`'s error, a local path the role
/// may not use with `42501`.
pub(crate) fn locate(
    engine: &Engine,
    session: &Session,
    text: &str,
    access: Access,
    unreachable: impl Fn(String) -> EngineError,
) -> EngineResult<FileLocation> {
    if let Some(path) = engine.checked_local_path(session, text, access)? {
        return Ok(FileLocation::Local(path));
    }
    let url = url::Url::parse(text).map_err(|e| unreachable(e.to_string()))?;
    let store = engine
        .base
        .runtime_env()
        .object_store_registry
        .get_store(&url)
        .map_err(|e| unreachable(e.to_string()))?;
    let path = ObjectPath::from_url_path(url.path()).map_err(|e| unreachable(e.to_string()))?;
    Ok(FileLocation::Store(store, path))
}
