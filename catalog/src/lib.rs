//! Catalog of prognos: which tables exist, where their data lives, and how they survive restarts.
//!
//! * [`persist`]: the durable catalog file (`catalog.json` in the data dir), written atomically.
//! * [`managed`]: managed tables — Parquet files under the data dir, versioned by manifests, with
//!   `INSERT` support through DataFusion's sink machinery.
//!
//! * [`roles`]: roles and users (`roles.json`), with [`scram`] password verifiers, and
//!   [`grants`]: owners, privileges and role memberships kept with them.
//! * [`models`]: the model registry — versions, artifacts, snapshots for running queries.
//! * [`system_tables`]: `system.models`, `system.model_versions`, `system.model_trials`.
//!
//! Frontends never reach in here directly.

pub mod error;
pub mod grants;
mod group_commit;
pub mod managed;
pub mod masking;
pub mod model_snapshot;
pub mod model_states;
pub mod models;
pub mod persist;
pub mod roles;
pub mod scram;
pub mod system_tables;

pub use error::{CatalogError, CatalogResult};
pub use grants::{Acl, PREDEFINED_ROLES, Privilege, Privileges, Securable};
pub use managed::{CommitLock, ManagedTable, StagedTable, WriteStage};
pub use model_snapshot::ModelSnapshot;
pub use model_states::{Admission, StateChange, VersionState};
pub use models::{
    ArtifactStores, LiveRule, LiveRuleKind, ModelEntry, ModelRegistry, ModelVersion, Payload,
    PayloadData, PredictionLogging, RetrainSchedule,
};
pub use persist::{CatalogFile, PersistentCatalog, TableEntry, TableKind};
pub use roles::{Role, RoleChange, RoleStore};
pub use scram::ScramVerifier;
