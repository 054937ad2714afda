//! Rows of `COPY … TO STDOUT` in PostgreSQL's text, CSV or binary layout, one `CopyData` per
//! row. Values go through the same encoders as a query's result rows ([`super::encode`]): text
//! and CSV take each value's text output, binary its binary output, framed as PostgreSQL
//! frames them (text escapes, CSV quoting, the `PGCOPY` header; pgwire adds the trailer).

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql};

use super::encode::{Col, FieldSink};
use super::types::pg_type;
use prognos_engine::{CopyFormat, CopyKind};

/// The signature, flags and header-extension length that open a binary COPY stream.
pub(super) fn binary_header() -> Bytes {
    let mut b = BytesMut::with_capacity(19);
    b.put_slice(b"PGCOPY\n\xFF\r\n\x00");
    b.put_i32(0);
    b.put_i32(0);
    b.freeze()
}

/// The CSV header line (column names), for `HEADER`.
pub(super) fn csv_header(schema: &Schema, fmt: &CopyFormat) -> Bytes {
    let mut line = BytesMut::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            line.put_u8(fmt.delimiter);
        }
        csv_value(&mut line, f.name().as_bytes(), fmt);
    }
    line.put_u8(b'\n');
    line.freeze()
}

/// One row being encoded.
struct CopyLine<'a> {
    fmt: &'a CopyFormat,
    types: &'a [Type],
    col: usize,
    buf: BytesMut,
}

impl FieldSink for CopyLine<'_> {
    fn encode_field<T: ToSql + ToSqlText + Sized>(&mut self, value: &T) -> PgWireResult<()> {
        let ty = &self.types[self.col];
        if self.fmt.kind == CopyKind::Binary {
            let at = self.buf.len();
            self.buf.put_i32(-1);
            if let IsNull::No = value.to_sql(ty, &mut self.buf)? {
                let len = (self.buf.len() - at - 4) as i32;
                self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        } else {
            if self.col > 0 {
                self.buf.put_u8(self.fmt.delimiter);
            }
            let mut text = BytesMut::new();
            match value.to_sql_text(ty, &mut text, &FormatOptions::default())? {
                IsNull::Yes => self.buf.put_slice(self.fmt.null.as_bytes()),
                IsNull::No if self.fmt.kind == CopyKind::Csv => {
                    csv_value(&mut self.buf, &text, self.fmt)
                }
                IsNull::No => text_value(&mut self.buf, &text, self.fmt.delimiter),
            }
        }
        self.col += 1;
        Ok(())
    }
}

/// A value in CSV: quoted when it holds the delimiter, the quote, a line break, equals the
/// NULL string, or is empty (so it reads back as an empty string, not NULL).
fn csv_value(out: &mut BytesMut, v: &[u8], fmt: &CopyFormat) {
    let needs = v.is_empty()
        || v.iter()
            .any(|&b| b == fmt.delimiter || b == fmt.quote || b == b'\n' || b == b'\r')
        || v == fmt.null.as_bytes();
    if !needs {
        out.put_slice(v);
        return;
    }
    out.put_u8(fmt.quote);
    for &b in v {
        if b == fmt.quote {
            out.put_u8(b);
        }
        out.put_u8(b);
    }
    out.put_u8(fmt.quote);
}

/// A value in PostgreSQL's text format: backslash, line breaks, tab and the delimiter escaped.
fn text_value(out: &mut BytesMut, v: &[u8], delimiter: u8) {
    for &b in v {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            b if b == delimiter => {
                out.put_u8(b'\\');
                out.put_u8(b);
            }
            b => out.put_u8(b),
        }
    }
}

/// Encode every row of `batch`.
pub(super) fn encode_rows(batch: &RecordBatch, fmt: &CopyFormat) -> PgWireResult<Vec<Bytes>> {
    let cols = batch
        .columns()
        .iter()
        .map(Col::new)
        .collect::<PgWireResult<Vec<_>>>()?;
    let types: Vec<Type> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| pg_type(f.data_type()))
        .collect();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut line = CopyLine {
            fmt,
            types: &types,
            col: 0,
            buf: BytesMut::new(),
        };
        if fmt.kind == CopyKind::Binary {
            line.buf.put_i16(cols.len() as i16);
        }
        for col in &cols {
            col.encode(&mut line, row)?;
        }
        if fmt.kind != CopyKind::Binary {
            line.buf.put_u8(b'\n');
        }
        rows.push(line.buf.freeze());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, StringArray};

    fn format(csv: bool, binary: bool) -> CopyFormat {
        let kind = match (csv, binary) {
            (_, true) => CopyKind::Binary,
            (true, false) => CopyKind::Csv,
            (false, false) => CopyKind::Text,
        };
        CopyFormat {
            kind,
            delimiter: if csv { b',' } else { b'\t' },
            header: false,
            null: if csv { String::new() } else { "\\N".into() },
            quote: b'"',
        }
    }

    fn batch() -> RecordBatch {
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("i", Arc::new(Int32Array::from(vec![Some(1), None]))),
            ("f", Arc::new(Float64Array::from(vec![0.5, 1e20]))),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a\tb\\c"), Some("")])),
            ),
        ];
        RecordBatch::try_from_iter(cols).expect("batch")
    }

    #[test]
    fn text_and_csv_lines_match_postgres() {
        let text = encode_rows(&batch(), &format(false, false)).expect("text");
        assert_eq!(text[0].as_ref(), b"1\t0.5\ta\\tb\\\\c\n");
        assert_eq!(text[1].as_ref(), b"\\N\t1e+20\t\n");
        let csv = encode_rows(&batch(), &format(true, false)).expect("csv");
        assert_eq!(csv[0].as_ref(), b"1,0.5,a\tb\\c\n");
        assert_eq!(csv[1].as_ref(), b",1e+20,\"\"\n");
    }

    #[test]
    fn binary_tuples_carry_lengths_and_network_order_values() {
        let rows = encode_rows(&batch(), &format(false, true)).expect("binary");
        let r = rows[1].as_ref();
        assert_eq!(&r[..2], &3i16.to_be_bytes());
        assert_eq!(&r[2..6], &(-1i32).to_be_bytes(), "NULL int");
        assert_eq!(&r[6..10], &8i32.to_be_bytes());
        assert_eq!(&r[10..18], &1e20f64.to_be_bytes());
        assert_eq!(&r[18..22], &0i32.to_be_bytes(), "empty string");
        assert_eq!(binary_header().len(), 19);
    }
}
