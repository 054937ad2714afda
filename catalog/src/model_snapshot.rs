//! What one query sees of the model registry: every model with its deployed version and all
//! its stored versions, each loaded on first use. A running query keeps its snapshot, so a
//! `DEPLOY`, `ROLLBACK` or `CREATE OR REPLACE MODEL` never changes the version under a query
//! that already started: every row of it is scored by one version.
//!
//! `PREDICT('m', …)` resolves to the deployed version; `PREDICT('m@3', …)` pins version 3,
//! whatever its state (to compare a candidate with the deployed one, or study a rejected one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use prognos_models::ModelArtifact;

use crate::error::{CatalogError, CatalogResult};
use crate::models::{Loaded, ModelVersion, PredictionLogging, Source, is_url, load_version};

/// One model version, loaded on first use.
#[derive(Debug)]
pub(crate) struct Slot {
    name: String,
    pub(crate) record: ModelVersion,
    source: Source,
    pub(crate) loaded: OnceLock<Loaded>,
}

impl Slot {
    pub(crate) fn new(name: &str, record: ModelVersion, source: Source) -> Arc<Slot> {
        Arc::new(Slot {
            name: name.to_string(),
            record,
            source,
            loaded: OnceLock::new(),
        })
    }

    pub(crate) fn loaded(
        name: &str,
        record: ModelVersion,
        source: Source,
        artifact: Loaded,
    ) -> Arc<Slot> {
        let slot = Slot::new(name, record, source);
        let _ = slot.loaded.set(artifact);
        slot
    }

    /// Load the version (once; later calls return the first outcome).
    pub(crate) async fn load(&self) -> &Loaded {
        if let Some(l) = self.loaded.get() {
            return l;
        }
        let outcome = load_version(&self.source, &self.name, &self.record).await;
        if let Err(reason) = &outcome {
            tracing::warn!(model = %self.name, version = self.record.version, %reason,
                "model artifact unreadable");
        }
        self.loaded.get_or_init(|| outcome)
    }

    /// Load the version from a synchronous caller: a data-dir artifact is read directly; an
    /// object-store one needs the multi-threaded runtime to wait on.
    pub(crate) fn load_blocking(&self) -> &Loaded {
        if let Some(l) = self.loaded.get() {
            return l;
        }
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        match runtime {
            Some(handle) => tokio::task::block_in_place(|| handle.block_on(self.load())),
            None if !is_url(&self.record.artifact) => futures::executor::block_on(self.load()),
            None => self.loaded.get_or_init(|| {
                Err(format!(
                    "{} was not loaded before planning, and it cannot be fetched from here",
                    self.record.artifact
                ))
            }),
        }
    }
}

/// One model in a snapshot: its deployed version and every stored version.
#[derive(Debug)]
pub(crate) struct ModelSlots {
    /// The model's name.
    pub(crate) name: String,
    /// The version `PREDICT('name', …)` uses.
    pub(crate) deployed: Option<u32>,
    /// Every stored version, by number.
    pub(crate) versions: BTreeMap<u32, Arc<Slot>>,
    /// How its predictions are logged, when they are.
    pub(crate) logging: Option<PredictionLogging>,
    /// The outcomes query of `SET OUTCOMES FROM`, when set.
    pub(crate) outcomes: Option<String>,
    /// The model of `SET FALLBACK`, when set.
    pub(crate) fallback: Option<String>,
    /// The prediction cache's size per version (`SET CACHE`), when set.
    pub(crate) cache_entries: Option<u64>,
}

/// The models visible to one query (see the module docs).
#[derive(Debug, Default)]
pub struct ModelSnapshot {
    models: HashMap<String, Arc<ModelSlots>>,
    /// Models the session's role may not use: looking one up is `PermissionDenied`.
    denied: HashSet<String>,
}

/// `m@3` → (`m`, version 3); any other name → (the name, none).
pub fn split_pin(name: &str) -> (&str, Option<u32>) {
    match name.rsplit_once('@') {
        Some((model, v)) if !model.is_empty() => match v.parse::<u32>() {
            Ok(v) => (model, Some(v)),
            Err(_) => (name, None),
        },
        _ => (name, None),
    }
}

impl ModelSnapshot {
    pub(crate) fn new(models: HashMap<String, Arc<ModelSlots>>) -> Self {
        Self {
            models,
            denied: HashSet::new(),
        }
    }

    /// The models, by name (the registry builds the next snapshot from them).
    pub(crate) fn models(&self) -> &HashMap<String, Arc<ModelSlots>> {
        &self.models
    }

    fn model(&self, name: &str) -> Option<&Arc<ModelSlots>> {
        self.models
            .get(name)
            .or_else(|| self.models.get(&name.to_ascii_lowercase()))
    }

    /// The version `name` stands for (exact name first, then lower-cased; `m@n` pins one).
    /// The model named `name` (no pin), when it exists and this snapshot may use it.
    fn usable(&self, name: &str) -> CatalogResult<&Arc<ModelSlots>> {
        let slots = self
            .model(name)
            .ok_or_else(|| CatalogError::ModelNotFound(name.to_string()))?;
        if self.denied.contains(&slots.name) {
            return Err(CatalogError::PermissionDenied {
                object: format!("model {}", slots.name),
            });
        }
        Ok(slots)
    }

    fn found(&self, name: &str) -> CatalogResult<&Arc<Slot>> {
        let (model, pin) = split_pin(name);
        let slots = self.usable(model).map_err(|e| match e {
            CatalogError::ModelNotFound(_) => CatalogError::ModelNotFound(name.to_string()),
            other => other,
        })?;
        match pin {
            Some(version) => {
                slots
                    .versions
                    .get(&version)
                    .ok_or_else(|| CatalogError::ModelVersionNotFound {
                        name: slots.name.clone(),
                        version,
                    })
            }
            None => slots
                .deployed
                .and_then(|d| slots.versions.get(&d))
                .ok_or_else(|| CatalogError::ModelVersionState {
                    name: slots.name.clone(),
                    version: None,
                    reason: "no version is deployed (ALTER MODEL ... DEPLOY VERSION n deploys \
                             one; PREDICT('name@n', ...) uses a version that is not)"
                        .into(),
                }),
        }
    }

    /// The version a model name stands for, with its artifact, loading it if no statement
    /// loaded it before.
    pub fn get(&self, name: &str) -> CatalogResult<(u32, Arc<ModelArtifact>)> {
        let slot = self.found(name)?;
        answer(name, slot, slot.load_blocking())
    }

    /// [`ModelSnapshot::get`] from an async caller: waits for the load instead of blocking.
    pub async fn load(&self, name: &str) -> CatalogResult<(u32, Arc<ModelArtifact>)> {
        let slot = self.found(name)?;
        answer(name, slot, slot.load().await)
    }

    /// How the model that `name` (`m` or `m@n`) stands for logs its predictions; `None` when
    /// it does not, or is not a model this snapshot may use.
    pub fn logging(&self, name: &str) -> Option<&PredictionLogging> {
        let slots = self.model(split_pin(name).0)?;
        if self.denied.contains(&slots.name) {
            return None;
        }
        slots.logging.as_ref()
    }

    /// The model that answers for the model `name` stands for when it fails (`SET
    /// FALLBACK`); `None` when it has none, or either is not a model this snapshot may use.
    pub fn fallback(&self, name: &str) -> Option<&str> {
        let slots = self.model(split_pin(name).0)?;
        let fallback = slots.fallback.as_deref()?;
        if self.denied.contains(&slots.name) || self.denied.contains(fallback) {
            return None;
        }
        Some(fallback)
    }

    /// How many answers the prediction cache keeps per version of the model `name` stands
    /// for (`SET CACHE`); `None` when it caches none.
    pub fn cache_entries(&self, name: &str) -> Option<u64> {
        self.model(split_pin(name).0)?.cache_entries
    }

    /// The model `name` stands for, with its logging and outcomes settings, for
    /// `MODEL_MONITOR`: `(model name, logging, outcomes query)`.
    pub fn monitoring(
        &self,
        name: &str,
    ) -> CatalogResult<(String, Option<&PredictionLogging>, Option<&str>)> {
        let slots = self.usable(name)?;
        Ok((
            slots.name.clone(),
            slots.logging.as_ref(),
            slots.outcomes.as_deref(),
        ))
    }

    /// This snapshot as a role sees it: the models for which `may_use` is false answer
    /// `PermissionDenied` (the loaded models stay shared).
    pub fn restricted(&self, may_use: impl Fn(&str) -> bool) -> ModelSnapshot {
        ModelSnapshot {
            models: self.models.clone(),
            denied: self
                .models
                .values()
                .map(|s| s.name.clone())
                .filter(|n| !may_use(n))
                .collect(),
        }
    }

    /// Whether some deployed version is not loaded yet (then a statement's models are
    /// preloaded). Other versions are loaded when a statement first pins one (`m@n`), and
    /// freed with the snapshot.
    pub fn has_unloaded(&self) -> bool {
        self.models.values().any(|m| {
            m.deployed
                .and_then(|d| m.versions.get(&d))
                .is_some_and(|s| s.loaded.get().is_none())
        })
    }

    /// Load the versions that those of `names` that are models stand for (other names are
    /// ignored), so planning finds them in memory. Failures are kept for `get` to report.
    pub async fn preload<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            if let Ok(slot) = self.found(name) {
                slot.load().await;
            }
        }
    }
}

/// A slot's load outcome as `get` answers it.
fn answer(name: &str, slot: &Slot, loaded: &Loaded) -> CatalogResult<(u32, Arc<ModelArtifact>)> {
    match loaded {
        Ok(a) => Ok((slot.record.version, Arc::clone(a))),
        Err(reason) => Err(CatalogError::ModelUnavailable {
            name: name.to_string(),
            reason: reason.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_from_the_last_at_sign() {
        assert_eq!(split_pin("churn@3"), ("churn", Some(3)));
        assert_eq!(split_pin("churn"), ("churn", None));
        assert_eq!(split_pin("churn@x"), ("churn@x", None));
        assert_eq!(split_pin("@3"), ("@3", None));
        assert_eq!(split_pin("a@b@12"), ("a@b", Some(12)));
    }
}
