//! `system.audit_log`: the audit log's files read as a table.
//!
//! The server appends one JSON object per line to `<data dir>/audit/audit-*.jsonl` (see the
//! server's `audit` module); this is a DataFusion listing table over that folder with the
//! records' fixed schema, so it reads every file there, the rotated ones included, and
//! filters and projections run as in any other scan. Only superusers read it, and roles
//! granted `SELECT ON system.audit_log`.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};

use crate::error::{EngineError, EngineResult, StatusCode};

/// The folder of the audit log in a data dir.
pub const AUDIT_DIR: &str = "audit";

/// The name of the table in the `system` schema.
pub const AUDIT_TABLE: &str = "audit_log";

/// The columns of an audit record, as the server writes them.
pub fn audit_schema() -> SchemaRef {
    let list = || DataType::new_list(DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("kind", DataType::Utf8, false),
        Field::new("user_name", DataType::Utf8, true),
        Field::new("client", DataType::Utf8, true),
        Field::new("protocol", DataType::Utf8, false),
        Field::new("statement", DataType::Utf8, true),
        Field::new("tables", list(), true),
        Field::new("models", list(), true),
        Field::new("rows", DataType::Int64, true),
        Field::new("duration_ms", DataType::Float64, true),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("sqlstate", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, true),
    ]))
}

/// The table over `<data_dir>/audit/` (created when missing).
pub(crate) fn audit_table(data_dir: &Path) -> EngineResult<Arc<dyn TableProvider>> {
    let dir = data_dir.join(AUDIT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| {
        EngineError::statement(
            StatusCode::IoError,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let options =
        ListingOptions::new(Arc::new(JsonFormat::default())).with_file_extension(".jsonl");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(audit_schema());
    Ok(Arc::new(ListingTable::try_new(config)?))
}
