//! Where a model file named in SQL lives: `CREATE MODEL … FROM` and `EXPORT MODEL … TO` take a
//! local path (relative ones from the server's working directory, as COPY's are), a `file://`
//! URL, or a URL of an object store the server has credentials for (`s3://`, `hdfs://`, …).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use crate::Engine;

/// A resolved model file location.
pub(crate) enum FileLocation {
    /// A file on the server's disk.
    Local(PathBuf),
    /// An object in a store.
    Store(Arc<dyn ObjectStore>, ObjectPath),
}

/// Resolve `text` (as written in the statement); the error says why it cannot be reached.
pub(crate) fn locate(engine: &Engine, text: &str) -> Result<FileLocation, String> {
    match url::Url::parse(text) {
        Ok(url) if url.scheme() == "file" => url
            .to_file_path()
            .map(FileLocation::Local)
            .map_err(|_| "not a local file URL".to_string()),
        Ok(url) if url.scheme().len() > 1 => {
            let store = engine
                .base
                .runtime_env()
                .object_store_registry
                .get_store(&url)
                .map_err(|e| e.to_string())?;
            let path = ObjectPath::from_url_path(url.path()).map_err(|e| e.to_string())?;
            Ok(FileLocation::Store(store, path))
        }
        // No scheme (or a one-letter one, a Windows drive): a local path.
        _ => Ok(FileLocation::Local(PathBuf::from(text))),
    }
}
