//! Rows of `COPY … TO STDOUT` in Postgres text or CSV layout, one `CopyData` per row.

use bytes::Bytes;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::error::{PgWireError, PgWireResult};

use prognos_engine::CopyFormat;

fn csv_field(out: &mut String, v: &str, fmt: &CopyFormat) {
    let q = fmt.quote as char;
    let needs = v.is_empty()
        || v.contains(fmt.delimiter as char)
        || v.contains(q)
        || v.contains('\n')
        || v.contains('\r')
        || v == fmt.null;
    if needs {
        out.push(q);
        for c in v.chars() {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
    } else {
        out.push_str(v);
    }
}

fn text_field(out: &mut String, v: &str, delimiter: char) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' if delimiter == '\t' => out.push_str("\\t"),
            c if c == delimiter => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// Encode every row of `batch`.
pub(super) fn encode_rows(batch: &RecordBatch, fmt: &CopyFormat) -> PgWireResult<Vec<Bytes>> {
    let opts = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    let delimiter = fmt.delimiter as char;
    for row in 0..batch.num_rows() {
        let mut line = String::new();
        for (i, (col, f)) in batch.columns().iter().zip(&formatters).enumerate() {
            if i > 0 {
                line.push(delimiter);
            }
            if col.is_null(row) {
                line.push_str(&fmt.null);
                continue;
            }
            let v = f.value(row).to_string();
            if fmt.csv {
                csv_field(&mut line, &v, fmt);
            } else {
                text_field(&mut line, &v, delimiter);
            }
        }
        line.push('\n');
        rows.push(Bytes::from(line));
    }
    Ok(rows)
}
