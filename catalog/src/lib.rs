//! Catalog of prognos: which tables exist, where their data lives, and how they survive restarts.
//!
//! * [`persist`]: the durable catalog file (`catalog.json` in the data dir), written atomically.
//! * [`managed`]: managed tables — Parquet files under the data dir, versioned by manifests, with
//!   `INSERT` support through DataFusion's sink machinery.
//!
//! The model registry joins this crate in a later step; frontends never reach in here directly.

pub mod error;
pub mod managed;
pub mod persist;

pub use error::{CatalogError, CatalogResult};
pub use managed::ManagedTable;
pub use persist::{CatalogFile, PersistentCatalog, TableEntry, TableKind};
