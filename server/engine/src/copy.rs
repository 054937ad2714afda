//! Postgres `COPY … FROM STDIN` and `COPY … TO STDOUT` (text and CSV formats).
//!
//! The engine decides what a COPY statement means (target table and columns, format options)
//! and loads the data the client sends; the frontend only moves bytes. `COPY … TO 'file'` and
//! `COPY … FROM 'file'` on the server's disk are DataFusion's own `COPY` and external tables.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
};

use super::{Engine, Session};
use crate::error::{EngineError, EngineResult, StatusCode};

/// Text or CSV layout of COPY data.
#[derive(Debug, Clone)]
pub struct CopyFormat {
    /// CSV (true) or Postgres text format (false).
    pub csv: bool,
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

/// Decode the options of a COPY statement.
pub(super) fn copy_format(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> EngineResult<CopyFormat> {
    let mut csv = false;
    let mut delimiter = None;
    let mut header = false;
    let mut null = None;
    let mut quote = b'"';
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                other => {
                    return Err(unsupported(format!(
                        "COPY format {other} is not supported (use text or csv)"
                    )));
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
                csv = true;
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
            CopyLegacyOption::Binary => {
                return Err(unsupported("COPY binary format is not supported"));
            }
            other => return Err(unsupported(format!("COPY option {other} is not supported"))),
        }
    }
    Ok(CopyFormat {
        csv,
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
        let text;
        let data: &[u8] = if fmt.csv {
            &data
        } else {
            // Text format: strip the `\.` end marker older clients send.
            text = data
                .strip_suffix(b"\\.\n")
                .map(|d| d.to_vec())
                .unwrap_or_else(|| data.to_vec());
            &text
        };
        let null_regex = if fmt.null.is_empty() {
            "^$".to_string()
        } else {
            format!("^{}$", regex_escape(&fmt.null))
        };
        let mut builder = ReaderBuilder::new(Arc::clone(&target.columns))
            .with_header(fmt.header)
            .with_delimiter(fmt.delimiter)
            .with_batch_size(64 * 1024)
            .with_null_regex(regex_lite_or_err(&null_regex)?);
        if fmt.csv {
            builder = builder.with_quote(fmt.quote);
        } else {
            builder = builder.with_quote(b'\0');
        }
        let reader = builder.build(Cursor::new(data.to_vec())).map_err(|e| {
            EngineError::statement(StatusCode::InvalidTextRepresentation, format!("COPY: {e}"))
        })?;
        let mut batches = Vec::new();
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| {
                EngineError::statement(StatusCode::InvalidTextRepresentation, format!("COPY: {e}"))
            })?;
            rows += batch.num_rows() as u64;
            batches.push(widen_to_table(&batch, &target.table_schema)?);
        }
        if batches.is_empty() {
            return Ok(0);
        }
        let df = session.ctx().read_batches(batches)?;
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

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn regex_lite_or_err(pattern: &str) -> EngineResult<regex::Regex> {
    regex::Regex::new(pattern).map_err(|e| {
        EngineError::statement(
            StatusCode::InvalidParameterValue,
            format!("COPY NULL option: {e}"),
        )
    })
}
