//! Storage layer of prognos.
//!
//! * [`stores`]: object stores for `file://`, `s3://` and (feature `hdfs`) `hdfs://` locations,
//!   registered with DataFusion's runtime so every table scan and `COPY` reaches them.
//! * [`manifest`]: versioned, atomically committed manifests that say which Parquet files make up
//!   a managed table, so a crash while writing never leaves a table unreadable or half-visible.
//! * [`durable`]: local writes that survive a power loss once acknowledged (the `file://` store
//!   and the catalog's own files), and [`fs_steps`]: the record of those writes and the crash
//!   points they make.
//! * [`parquet_files`]: writing record batch streams as Parquet data files into an object store.
//!
//! Nothing here knows about SQL sessions, wire protocols or models.

pub mod durable;
pub mod error;
pub mod fs_steps;
pub mod manifest;
pub mod parquet_files;
pub mod stores;

pub use error::{StorageError, StorageResult};
