//! Postgres `COPY … FROM STDIN` and `COPY … TO STDOUT` (text, CSV and binary formats).
//!
//! [`text`], [`csv`] and [`binary`] decode PostgreSQL's COPY data. (The frontend encodes
//! `COPY … TO STDOUT`.)
//!
//! The engine decides what a COPY statement means (target table and columns, format options)
//! and loads the data the client sends; the frontend only moves bytes. `COPY … TO 'file'` and
//! `COPY … FROM 'file'` on the server's disk are DataFusion's own `COPY` and external tables.

mod binary;
mod csv;
mod text;

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
};

use super::{Engine, Session};
use crate::error::{EngineError, EngineResult, StatusCode};

/// Layout of COPY data.
#[derive(Debug, Clone)]
pub struct CopyFormat {
    /// Text, CSV or binary (then the text options are unused).
    pub kind: CopyKind,
    /// Field delimiter (`,` for CSV, tab for text).
    pub delimiter: u8,
    /// First line is a header.
    pub header: bool,
    /// How NULL is written (`""` for CSV, `\N` for text).
    pub null: String,
    /// CSV quote character.
    pub quote: u8,
}

/// Where `COPY … FROM STDIN` rows go.
#[derive(Debug, Clone)]
pub struct CopyInTarget {
    /// Target table.
    pub table: TableReference,
    /// Columns the data holds, in order.
    pub columns: SchemaRef,
    /// The whole table schema.
    pub table_schema: SchemaRef,
    /// Data layout.
    pub format: CopyFormat,
}

fn unsupported(msg: impl Into<String>) -> EngineError {
    EngineError::statement(StatusCode::FeatureNotSupported, msg)
}

/// The three data formats of PostgreSQL's COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// Tab-separated, backslash escapes, `\N` for NULL.
    Text,
    /// Comma-separated with quoting.
    Csv,
    /// The `PGCOPY` binary stream.
    Binary,
}

/// Decode the options of a COPY statement.
pub(super) fn copy_format(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> EngineResult<CopyFormat> {
    let mut kind = CopyKind::Text;
    let mut delimiter = None;
    let mut header = false;
    let mut null = None;
    let mut quote = b'"';
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => kind = CopyKind::Csv,
                "text" => kind = CopyKind::Text,
                "binary" => kind = CopyKind::Binary,
                other => {
                    return Err(EngineError::statement(
                        StatusCode::InvalidParameterValue,
                        format!("COPY format \"{other}\" not recognized (text, csv or binary)"),
                    ));
                }
            },
            CopyOption::Delimiter(c) => delimiter = Some(*c as u8),
            CopyOption::Header(h) => header = *h,
            CopyOption::Null(n) => null = Some(n.clone()),
            CopyOption::Quote(q) => quote = *q as u8,
            CopyOption::Encoding(e)
                if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(unsupported(format!("COPY option {other} is not supported"))),
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(opts) => {
                kind = CopyKind::Csv;
                for c in opts {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(q) => quote = *q as u8,
                        other => {
                            return Err(unsupported(format!(
                                "COPY option {other} is not supported"
                            )));
                        }
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c as u8),
            CopyLegacyOption::Null(n) => null = Some(n.clone()),
            CopyLegacyOption::Header => header = true,
            CopyLegacyOption::Binary => kind = CopyKind::Binary,
            other => return Err(unsupported(format!("COPY option {other} is not supported"))),
        }
    }
    let csv = kind == CopyKind::Csv;
    Ok(CopyFormat {
        kind,
        delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
        header,
        null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
        quote,
    })
}

/// Resolve the target of `COPY t [(cols)] FROM STDIN`.
pub(super) async fn copy_in_target(
    session: &Session,
    source: &CopySource,
    target: &CopyTarget,
    format: CopyFormat,
) -> EngineResult<CopyInTarget> {
    if !matches!(target, CopyTarget::Stdin) {
        return Err(unsupported(
            "COPY FROM a server file is not supported; use CREATE EXTERNAL TABLE or psql's \\copy",
        ));
    }
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Err(EngineError::statement(
            StatusCode::SyntaxError,
            "COPY FROM needs a table",
        ));
    };
    let table = TableReference::from(table_name.to_string());
    let provider = session.ctx().table_provider(table.clone()).await?;
    let table_schema = provider.schema();
    let fields = if columns.is_empty() {
        table_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>()
    } else {
        columns
            .iter()
            .map(|c| {
                table_schema
                    .field_with_name(&c.value)
                    .map(|f| f.clone().with_nullable(true))
                    .map_err(|_| {
                        EngineError::statement(
                            StatusCode::UndefinedColumn,
                            format!(
                                "column \"{}\" of relation \"{table}\" does not exist",
                                c.value
                            ),
                        )
                    })
            })
            .collect::<EngineResult<Vec<_>>>()?
    };
    let fields = fields
        .into_iter()
        .map(|f| f.with_nullable(true))
        .collect::<Vec<_>>();
    Ok(CopyInTarget {
        table,
        columns: Arc::new(Schema::new(fields)),
        table_schema,
        format,
    })
}

impl Engine {
    /// Load the bytes a client sent for `COPY … FROM STDIN`; returns rows inserted.
    pub async fn copy_in(
        &self,
        session: &Session,
        target: &CopyInTarget,
        data: Bytes,
    ) -> EngineResult<u64> {
        let fmt = &target.format;
        let batch = if fmt.kind == CopyKind::Binary {
            binary::decode(&data, &target.columns)?
        } else if fmt.kind == CopyKind::Csv {
            csv::decode(&data, &target.columns, fmt)?
        } else {
            text::decode(&data, &target.columns, fmt)?
        };
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            return Ok(0);
        }
        let batch = widen_to_table(&batch, &target.table_schema)?;
        let df = session.ctx().read_batches(vec![batch])?;
        df.write_table(&target.table.to_string(), DataFrameWriteOptions::new())
            .await?;
        Ok(rows)
    }
}

/// Arrange parsed columns as the full table row (missing columns are NULL).
fn widen_to_table(batch: &RecordBatch, table: &SchemaRef) -> EngineResult<RecordBatch> {
    let columns = table
        .fields()
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .cloned()
                .unwrap_or_else(|| new_null_array(f.data_type(), batch.num_rows()) as ArrayRef)
        })
        .collect::<Vec<_>>();
    let nullable = Schema::new(
        table
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    );
    Ok(RecordBatch::try_new(Arc::new(nullable), columns)?)
}
