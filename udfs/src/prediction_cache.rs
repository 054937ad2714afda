//! The prediction cache of `ALTER MODEL m SET CACHE (entries = n)`: answers to small batches
//! (at most [`MAX_CACHED_ROWS`] rows, as point queries send) kept per model version, keyed
//! by the exact input values, so a repeated identical input is answered without scoring.
//!
//! Each loaded version has its own least-recently-used map of `entries` answers. A version is
//! known by its artifact in memory (the address of its `Arc`, held weakly so the address is
//! not reused while the entry lives), so a new version, or a model dropped and made again
//! under the same name, never meets an old answer. Maps of versions no longer in memory are
//! dropped on the next insert. The engine's rule for cached plans (a registry change gives
//! new snapshots) is what retires a version from serving; answers depend only on the version
//! and the input values, not on the role asking.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::row::{RowConverter, SortField};
use lru::LruCache;
use prognos_models::ModelArtifact;

/// Batches with more rows than this are scored, never cached.
pub(crate) const MAX_CACHED_ROWS: usize = 64;

struct VersionCache {
    model: Weak<ModelArtifact>,
    answers: LruCache<Vec<u8>, ArrayRef>,
}

static CACHES: LazyLock<Mutex<HashMap<usize, VersionCache>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The cache key of a batch for function `kind` (a byte naming the function): the rows'
/// values in Arrow's row format; `None` for a batch too large or of types the row format
/// does not take.
pub(crate) fn key(kind: u8, columns: &[ArrayRef]) -> Option<Vec<u8>> {
    let rows = columns.first().map(|c| c.len())?;
    if rows == 0 || rows > MAX_CACHED_ROWS {
        return None;
    }
    let fields = columns
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).ok()?;
    let converted = converter.convert_columns(columns).ok()?;
    let mut key = vec![kind];
    for row in converted.iter() {
        let bytes = row.as_ref();
        key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        key.extend_from_slice(bytes);
    }
    Some(key)
}

fn address(model: &Arc<ModelArtifact>) -> usize {
    Arc::as_ptr(model) as usize
}

/// The cached answer of `model` to `key`.
pub(crate) fn get(model: &Arc<ModelArtifact>, key: &[u8]) -> Option<ArrayRef> {
    let mut caches = CACHES.lock().unwrap_or_else(|p| p.into_inner());
    let cache = caches.get_mut(&address(model))?;
    if !std::ptr::eq(cache.model.as_ptr(), Arc::as_ptr(model)) {
        return None;
    }
    cache.answers.get(key).cloned()
}

/// Keep `answer` as `model`'s answer to `key`, in a map of at most `entries` answers.
pub(crate) fn put(model: &Arc<ModelArtifact>, entries: u64, key: Vec<u8>, answer: ArrayRef) {
    let Some(capacity) = NonZeroUsize::new(entries as usize) else {
        return;
    };
    let mut caches = CACHES.lock().unwrap_or_else(|p| p.into_inner());
    caches.retain(|_, c| c.model.strong_count() > 0);
    let cache = caches
        .entry(address(model))
        .or_insert_with(|| VersionCache {
            model: Arc::downgrade(model),
            answers: LruCache::new(capacity),
        });
    if cache.answers.cap() != capacity {
        cache.answers.resize(capacity);
    }
    cache.answers.put(key, answer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};

    #[test]
    fn keys_tell_values_functions_and_sizes_apart() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), None]));
        let b: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), Some(0.0)]));
        let s: ArrayRef = Arc::new(StringArray::from(vec!["x", "y"]));
        let k = |kind, cols: &[ArrayRef]| key(kind, cols).expect("key");
        assert_eq!(k(0, &[a.clone(), s.clone()]), k(0, &[a.clone(), s.clone()]));
        assert_ne!(k(0, &[a.clone(), s.clone()]), k(0, &[b.clone(), s.clone()]));
        assert_ne!(k(0, &[a.clone(), s.clone()]), k(1, &[a.clone(), s.clone()]));
        let big: ArrayRef = Arc::new(Float64Array::from(vec![0.0; MAX_CACHED_ROWS + 1]));
        assert!(key(0, &[big]).is_none());
    }
}
