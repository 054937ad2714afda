//! `COPY … FROM STDIN` in PostgreSQL's text format: one row per line, fields split at the
//! delimiter, the NULL string (`\N`) for NULL, backslash escapes (`\t`, `\n`, `\\`, `\b`, `\f`,
//! `\r`, `\v`, octal `\123`, hex `\x41`, and a backslash before any other character standing
//! for that character), and an optional `\.` end line. Each column is read as text, then cast
//! to the target column's type (a value that does not convert is `22P02`).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::util::display::FormatOptions;

use super::CopyFormat;
use crate::error::{EngineError, EngineResult, StatusCode};

/// A COPY value or row that cannot be read (`22P02`).
pub(super) fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::statement(StatusCode::InvalidTextRepresentation, msg)
}

/// Decode text-format COPY data into a batch of `columns` (nullable).
pub(super) fn decode(
    data: &[u8],
    columns: &SchemaRef,
    fmt: &CopyFormat,
) -> EngineResult<RecordBatch> {
    let text = utf8(data)?;
    let mut rows = TextColumns::new(columns);
    let delimiter = fmt.delimiter as char;
    // Every line ends with a newline; the text after the last one is not a row.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = text.split('\n').enumerate();
    if text.is_empty() {
        lines.next();
    }
    if fmt.header {
        lines.next();
    }
    for (n, line) in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        let fields = split_fields(line, delimiter)
            .into_iter()
            .map(|raw| {
                if raw == fmt.null {
                    Ok(None)
                } else {
                    unescape(raw)
                        .map(Some)
                        .map_err(|e| bad(format!("COPY: line {}: {e}", n + 1)))
                }
            })
            .collect::<EngineResult<Vec<_>>>()?;
        rows.push(format_args!("line {}", n + 1), fields)?;
    }
    rows.finish()
}

/// COPY data as text values, column by column, then converted to the columns' types.
pub(super) struct TextColumns<'a> {
    columns: &'a SchemaRef,
    builders: Vec<StringBuilder>,
}

impl<'a> TextColumns<'a> {
    pub(super) fn new(columns: &'a SchemaRef) -> Self {
        let builders = columns
            .fields()
            .iter()
            .map(|_| StringBuilder::new())
            .collect();
        Self { columns, builders }
    }

    /// Add a row: its values in column order, `None` for NULL; `row` names it in errors.
    pub(super) fn push(
        &mut self,
        row: std::fmt::Arguments<'_>,
        fields: Vec<Option<String>>,
    ) -> EngineResult<()> {
        if fields.len() != self.builders.len() {
            return Err(bad(format!(
                "COPY: {row}: {} fields for {} columns",
                fields.len(),
                self.builders.len()
            )));
        }
        for (b, f) in self.builders.iter_mut().zip(fields) {
            b.append_option(f);
        }
        Ok(())
    }

    /// The batch of the rows added, each column converted from text ([`from_text`]).
    pub(super) fn finish(self) -> EngineResult<RecordBatch> {
        let arrays = self
            .builders
            .into_iter()
            .zip(self.columns.fields())
            .map(|(mut b, f)| {
                let a: ArrayRef = Arc::new(b.finish());
                from_text(&a, f)
            })
            .collect::<EngineResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(self.columns), arrays)?)
    }
}

/// COPY data as UTF-8 text.
pub(super) fn utf8(data: &[u8]) -> EngineResult<&str> {
    std::str::from_utf8(data).map_err(|_| bad("COPY: data is not valid UTF-8"))
}

/// A column of text values as the type of `field` reads them from text: `bytea` in
/// PostgreSQL's hex (`\x00ff`) or escape format, everything else by Arrow's cast (a value
/// that does not convert is an error, not NULL).
pub(super) fn from_text(text: &ArrayRef, field: &Field) -> EngineResult<ArrayRef> {
    let fail = |e: String| bad(format!("COPY: column \"{}\": {e}", field.name()));
    if matches!(
        field.data_type(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    ) {
        let strings = cast_with_options(text, &DataType::Utf8, &CastOptions::default())
            .map_err(|e| fail(e.to_string()))?;
        let strings = strings.as_string::<i32>();
        let mut out = BinaryBuilder::new();
        for i in 0..strings.len() {
            if strings.is_null(i) {
                out.append_null();
            } else {
                out.append_value(bytea_from_text(strings.value(i)).map_err(fail)?);
            }
        }
        let a: ArrayRef = Arc::new(out.finish());
        return cast(&a, field.data_type()).map_err(|e| fail(e.to_string()));
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    cast_with_options(text, field.data_type(), &options).map_err(|e| fail(e.to_string()))
}

/// PostgreSQL's `bytea` input: `\x` and hex digits, or the escape format (`\\` a
/// backslash, `\nnn` an octal byte, other bytes as they are).
fn bytea_from_text(s: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(format!(
                "invalid hexadecimal data: odd number of digits in {s:?}"
            ));
        }
        return digits
            .chunks(2)
            .map(|pair| {
                let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
                u8::from_str_radix(text, 16)
                    .map_err(|_| format!("invalid hexadecimal digit in {s:?}"))
            })
            .collect();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if i + 3 < b.len() && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d)) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push((v & 0xFF) as u8);
            i += 4;
        } else {
            return Err(format!("invalid input syntax for type bytea: {s:?}"));
        }
    }
    Ok(out)
}

/// The raw fields of a line: split at delimiters that are not escaped.
fn split_fields(line: &str, delimiter: char) -> Vec<&str> {
    let mut fields = vec![];
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delimiter {
            fields.push(&line[start..i]);
            start = i + c.len_utf8();
        }
    }
    fields.push(&line[start..]);
    fields
}

/// A field's value with its backslash escapes decoded.
fn unescape(raw: &str) -> Result<String, String> {
    if !raw.contains('\\') {
        return Ok(raw.to_string());
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' || i + 1 == bytes.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = bytes[i + 1];
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                    v = v * 8 + (bytes[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push((v & 0xFF) as u8);
            }
            b'x' if i < bytes.len() && bytes[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 && i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                    v = v * 16 + (bytes[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| "an escape makes invalid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Int64Type, Schema};

    #[test]
    fn bytea_reads_hex_and_escape_formats() {
        assert_eq!(bytea_from_text("\\x00ff").expect("hex"), vec![0, 255]);
        assert_eq!(
            bytea_from_text("a\\\\b\\001").expect("escape"),
            b"a\\b\x01".to_vec()
        );
        assert!(bytea_from_text("\\x0").is_err());
        assert!(bytea_from_text("\\q").is_err());
    }

    fn fmt() -> CopyFormat {
        CopyFormat {
            kind: crate::CopyKind::Text,
            delimiter: b'\t',
            header: false,
            null: "\\N".into(),
            quote: b'"',
        }
    }

    #[test]
    fn escapes_nulls_and_the_end_marker() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let data = b"1\ta\\tb\\\\c\\nd\n2\t\\N\n3\t\\101\\x42\\.\n\\.\n9\tignored\n";
        let batch = decode(data, &schema, &fmt()).expect("decodes");
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(2), 3);
        let s = batch.column(1).as_string::<i32>();
        assert_eq!(s.value(0), "a\tb\\c\nd");
        assert!(s.is_null(1));
        assert_eq!(s.value(2), "AB.");
    }

    #[test]
    fn an_escaped_delimiter_stays_in_the_field_and_bad_values_fail() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = decode(b"x\\\ty\t5\n", &schema, &fmt()).expect("decodes");
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "x\ty");
        let err = decode(b"x\tfive\n", &schema, &fmt()).expect_err("not a number");
        assert_eq!(err.status(), StatusCode::InvalidTextRepresentation);
        assert!(decode(b"only-one-field\n", &schema, &fmt()).is_err());
    }
}
