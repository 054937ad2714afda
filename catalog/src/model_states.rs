//! The lifecycle of a model's versions: which one serves `PREDICT`, and the rules for moving
//! versions between states.
//!
//! * `deployed` — the version `PREDICT('m', …)` uses; at most one per model.
//! * `candidate` — stored and fit to serve (it passed its validation gate, or was deployed
//!   before and replaced); `ALTER MODEL m DEPLOY VERSION n` makes it the deployed one.
//! * `rejected` — failed its validation gate; it is kept (and may be pinned as `m@n` to study
//!   it) but cannot be deployed.
//! * `retired` — taken out of service by `RETIRE VERSION` or by a rollback; `ROLLBACK` skips
//!   it, an explicit `DEPLOY VERSION` brings it back.
//!
//! Every deployment pushes the version it replaces onto the model's history, so
//! `ALTER MODEL m ROLLBACK` returns to the most recent earlier deployment that is still a
//! candidate, and retires the version rolled back from. (A version being trained is shown as
//! `training` by `system.model_versions` but is not stored until it is done.)
//!
//! These are rules on a [`ModelEntry`] alone; the registry applies them to a copy of its file
//! and writes it atomically, so a switch is either stored whole or not at all.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, CatalogResult};
use crate::models::{ModelEntry, ModelVersion};

/// The state of one model version (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Serves `PREDICT`.
    Deployed,
    /// Fit to serve, not serving.
    #[default]
    Candidate,
    /// Failed its validation gate.
    Rejected,
    /// Taken out of service.
    Retired,
    /// Being trained now: shown by `system.model_versions` while `CREATE MODEL` or a retrain
    /// runs, never stored (a version is stored only once it is trained).
    Training,
}

impl VersionState {
    /// The state's name as SQL shows it.
    pub fn name(self) -> &'static str {
        match self {
            VersionState::Deployed => "deployed",
            VersionState::Candidate => "candidate",
            VersionState::Rejected => "rejected",
            VersionState::Retired => "retired",
            VersionState::Training => "training",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who changes a version's state, when, and why.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// RFC 3339 time of the change.
    pub at: String,
    /// The role that made it (`system` for the server's own changes).
    pub by: String,
    /// Why, when there is more to say than the statement (a gate's verdict, a rollback rule).
    pub reason: Option<String>,
}

/// How a newly trained or imported version enters the model.
#[derive(Debug, Clone)]
pub enum Admission {
    /// It serves from now on.
    Deploy,
    /// It is stored as a candidate (`deploy = 'manual'`).
    Candidate,
    /// It failed its gate, for this reason.
    Reject(String),
}

fn state_error(entry: &ModelEntry, version: Option<u32>, reason: String) -> CatalogError {
    CatalogError::ModelVersionState {
        name: entry.name.clone(),
        version,
        reason,
    }
}

impl ModelVersion {
    fn set_state(&mut self, state: VersionState, change: &StateChange) {
        self.state = state;
        self.state_changed_at = change.at.clone();
        self.state_changed_by = change.by.clone();
        self.state_reason = change.reason.clone();
    }
}

impl ModelEntry {
    /// The deployed version's number, if one is deployed.
    pub fn deployed(&self) -> Option<u32> {
        (self.current != 0).then_some(self.current)
    }

    fn version_mut(&mut self, version: u32) -> CatalogResult<&mut ModelVersion> {
        let name = self.name.clone();
        self.versions
            .iter_mut()
            .find(|v| v.version == version)
            .ok_or(CatalogError::ModelVersionNotFound { name, version })
    }

    /// The number the next version gets (never one a dropped version had).
    pub(crate) fn next_version(&self) -> u32 {
        let highest = self.versions.iter().map(|v| v.version).max().unwrap_or(0);
        highest.max(self.last_version) + 1
    }

    /// Give a registry written before versions had states its lifecycle: the current version
    /// is deployed, the others are candidates deployed in turn before it (so `ROLLBACK` goes
    /// to the one before).
    pub(crate) fn adopt_legacy(&mut self, created_at_of_states: &str) {
        let current = self.current;
        for v in &mut self.versions {
            v.state = if v.version == current {
                VersionState::Deployed
            } else {
                VersionState::Candidate
            };
            v.state_changed_at = created_at_of_states.to_string();
            v.state_changed_by = "system".into();
        }
        self.history = self
            .versions
            .iter()
            .map(|v| v.version)
            .filter(|v| *v < current)
            .collect();
        self.last_version = self.next_version() - 1;
    }

    /// Add a new version, admitted as `admission` says. Returns whether it was deployed.
    pub(crate) fn add_version(
        &mut self,
        mut record: ModelVersion,
        admission: &Admission,
        change: &StateChange,
    ) -> bool {
        self.last_version = self.last_version.max(record.version);
        let (state, reason) = match admission {
            Admission::Deploy => (VersionState::Deployed, change.reason.clone()),
            Admission::Candidate => (VersionState::Candidate, change.reason.clone()),
            Admission::Reject(why) => (VersionState::Rejected, Some(why.clone())),
        };
        record.set_state(
            state,
            &StateChange {
                reason,
                ..change.clone()
            },
        );
        let version = record.version;
        self.versions.push(record);
        if state == VersionState::Deployed {
            self.switch_to(version, change);
            true
        } else {
            false
        }
    }

    /// Make `version` the deployed one; the one it replaces becomes a candidate and goes on
    /// the history.
    fn switch_to(&mut self, version: u32, change: &StateChange) {
        if let Some(previous) = self.deployed().filter(|p| *p != version) {
            if let Ok(v) = self.version_mut(previous) {
                v.set_state(VersionState::Candidate, change);
            }
            self.history.push(previous);
        }
        self.current = version;
        if let Ok(v) = self.version_mut(version) {
            v.set_state(VersionState::Deployed, change);
        }
    }

    /// `ALTER MODEL m DEPLOY VERSION n`. Returns the version it replaced.
    pub(crate) fn deploy(
        &mut self,
        version: u32,
        change: &StateChange,
    ) -> CatalogResult<Option<u32>> {
        let state = self.version_mut(version)?.state;
        match state {
            VersionState::Deployed => Err(state_error(
                self,
                Some(version),
                format!("version {version} is already deployed"),
            )),
            VersionState::Rejected => {
                let why = self
                    .versions
                    .iter()
                    .find(|v| v.version == version)
                    .and_then(|v| v.state_reason.clone())
                    .unwrap_or_else(|| "no reason recorded".into());
                Err(state_error(
                    self,
                    Some(version),
                    format!(
                        "version {version} was rejected by its validation gate ({why}) and cannot be deployed"
                    ),
                ))
            }
            VersionState::Candidate | VersionState::Retired => {
                let previous = self.deployed();
                self.switch_to(version, change);
                Ok(previous)
            }
            VersionState::Training => Err(state_error(
                self,
                Some(version),
                format!("version {version} is still being trained"),
            )),
        }
    }

    /// `ALTER MODEL m ROLLBACK`: back to the most recent earlier deployment that is still a
    /// candidate; the version rolled back from is retired (`change.reason`, if any, says why,
    /// as an automatic rollback's rule does). Returns `(from, to)`.
    pub(crate) fn rollback(&mut self, change: &StateChange) -> CatalogResult<(u32, u32)> {
        let Some(from) = self.deployed() else {
            return Err(state_error(
                self,
                None,
                "no version is deployed, so there is nothing to roll back".into(),
            ));
        };
        let target = self.history.iter().rposition(|h| {
            self.versions
                .iter()
                .any(|v| v.version == *h && v.state == VersionState::Candidate)
        });
        let Some(at) = target else {
            return Err(state_error(
                self,
                None,
                format!(
                    "no earlier deployed version to roll back to from version {from} (retired \
                     and dropped versions are skipped; DEPLOY VERSION n deploys any other)"
                ),
            ));
        };
        let to = self.history[at];
        self.history.truncate(at);
        let why = change
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let retired = StateChange {
            reason: Some(format!("rolled back to version {to}{why}")),
            ..change.clone()
        };
        self.version_mut(from)?
            .set_state(VersionState::Retired, &retired);
        let restored = StateChange {
            reason: Some(format!("deployed again by a rollback from version {from}")),
            ..change.clone()
        };
        self.current = to;
        self.version_mut(to)?
            .set_state(VersionState::Deployed, &restored);
        Ok((from, to))
    }

    /// `ALTER MODEL m RETIRE VERSION n`.
    pub(crate) fn retire(&mut self, version: u32, change: &StateChange) -> CatalogResult<()> {
        let state = self.version_mut(version)?.state;
        match state {
            VersionState::Deployed => Err(state_error(
                self,
                Some(version),
                format!("version {version} is deployed: deploy another version or roll back first"),
            )),
            VersionState::Retired => Err(state_error(
                self,
                Some(version),
                format!("version {version} is already retired"),
            )),
            VersionState::Candidate | VersionState::Rejected | VersionState::Training => {
                self.version_mut(version)?
                    .set_state(VersionState::Retired, change);
                Ok(())
            }
        }
    }

    /// `DROP MODEL m VERSION n`: forget the version (its files are removed by the registry).
    pub(crate) fn remove_version(&mut self, version: u32) -> CatalogResult<ModelVersion> {
        let state = self.version_mut(version)?.state;
        if state == VersionState::Deployed {
            return Err(state_error(
                self,
                Some(version),
                format!(
                    "version {version} is deployed: deploy another version or roll back first \
                     (DROP MODEL {} drops the whole model)",
                    self.name
                ),
            ));
        }
        if self.versions.len() == 1 {
            return Err(state_error(
                self,
                Some(version),
                format!(
                    "version {version} is the model's only version: use DROP MODEL {}",
                    self.name
                ),
            ));
        }
        self.history.retain(|h| *h != version);
        let at = self
            .versions
            .iter()
            .position(|v| v.version == version)
            .ok_or_else(|| CatalogError::ModelVersionNotFound {
                name: self.name.clone(),
                version,
            })?;
        Ok(self.versions.remove(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> StateChange {
        StateChange {
            at: "2026-12-07T00:00:00Z".into(),
            by: "alice".into(),
            reason: None,
        }
    }

    fn version(n: u32) -> ModelVersion {
        ModelVersion {
            version: n,
            ..crate::models::placeholder_version()
        }
    }

    /// Model `m` with no versions.
    fn empty() -> ModelEntry {
        ModelEntry::new("m")
    }

    fn model(versions: u32) -> ModelEntry {
        let mut m = empty();
        for n in 1..=versions {
            m.add_version(version(n), &Admission::Deploy, &change());
        }
        m
    }

    fn states(m: &ModelEntry) -> Vec<(u32, &'static str)> {
        m.versions
            .iter()
            .map(|v| (v.version, v.state.name()))
            .collect()
    }

    #[test]
    fn each_new_deployment_replaces_the_last_and_rollback_walks_back() {
        let mut m = model(3);
        assert_eq!(m.deployed(), Some(3));
        assert_eq!(
            states(&m),
            [(1, "candidate"), (2, "candidate"), (3, "deployed")]
        );
        assert_eq!(m.rollback(&change()).expect("rollback"), (3, 2));
        assert_eq!(
            states(&m),
            [(1, "candidate"), (2, "deployed"), (3, "retired")]
        );
        assert_eq!(m.rollback(&change()).expect("rollback"), (2, 1));
        let e = m.rollback(&change()).expect_err("nothing left");
        assert!(e.to_string().contains("no earlier deployed version"), "{e}");
        // An explicit deploy brings a retired version back.
        assert_eq!(m.deploy(3, &change()).expect("deploy"), Some(1));
        assert_eq!(m.deployed(), Some(3));
        assert_eq!(m.rollback(&change()).expect("rollback"), (3, 1));
    }

    #[test]
    fn rejected_versions_cannot_be_deployed_and_deployed_ones_cannot_be_retired_or_dropped() {
        let mut m = model(1);
        let deployed = m.add_version(
            version(2),
            &Admission::Reject("auc 0.61 < 0.80".into()),
            &change(),
        );
        assert!(!deployed);
        assert_eq!(m.deployed(), Some(1));
        let e = m.deploy(2, &change()).expect_err("rejected");
        assert!(e.to_string().contains("auc 0.61 < 0.80"), "{e}");
        assert!(m.retire(1, &change()).is_err());
        assert!(m.remove_version(1).is_err());
        m.retire(2, &change()).expect("retire the rejected one");
        assert!(m.retire(2, &change()).is_err(), "twice");
        assert!(m.deploy(1, &change()).is_err(), "already deployed");
        assert!(matches!(
            m.deploy(9, &change()),
            Err(CatalogError::ModelVersionNotFound { version: 9, .. })
        ));
    }

    #[test]
    fn dropped_versions_leave_the_history_and_their_numbers_are_not_reused() {
        let mut m = model(3);
        m.remove_version(2).expect("drop v2");
        m.remove_version(1).expect("drop v1");
        assert!(m.remove_version(3).is_err(), "deployed");
        assert!(m.history.is_empty());
        assert!(m.rollback(&change()).is_err());
        m.add_version(version(4), &Admission::Candidate, &change());
        m.remove_version(4).expect("drop the newest");
        assert_eq!(m.next_version(), 5);
    }

    #[test]
    fn a_model_whose_first_version_failed_its_gate_has_nothing_deployed() {
        let mut m = empty();
        m.add_version(version(1), &Admission::Reject("worse".into()), &change());
        assert_eq!(m.deployed(), None);
        assert!(m.rollback(&change()).is_err());
        m.add_version(version(2), &Admission::Candidate, &change());
        assert_eq!(m.deploy(2, &change()).expect("deploy"), None);
        assert_eq!(m.deployed(), Some(2));
        assert!(m.history.is_empty());
    }

    #[test]
    fn legacy_registries_deploy_their_current_version() {
        let mut m = ModelEntry {
            current: 2,
            versions: vec![version(1), version(2), version(3)],
            ..empty()
        };
        m.adopt_legacy("2026-01-01T00:00:00Z");
        assert_eq!(
            states(&m),
            [(1, "candidate"), (2, "deployed"), (3, "candidate")]
        );
        assert_eq!(m.history, [1]);
        assert_eq!(m.next_version(), 4);
    }
}
