//! `COPY … FROM STDIN (FORMAT csv)` as PostgreSQL reads CSV: fields split at the delimiter,
//! quoted fields (the quote doubled inside them) may hold delimiters and line breaks, an
//! unquoted field equal to the NULL string (empty by default) is NULL while a quoted one never
//! is (so `""` is an empty string), and `HEADER` skips the first line. Arrow's CSV reader
//! cannot tell `""` from an empty field, hence this reader; values are then converted as in
//! the text format ([`super::text::TextColumns`]).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::CopyFormat;
use super::text::{TextColumns, bad, utf8};
use crate::error::EngineResult;

/// One field as read: its text and whether it was quoted.
struct Field {
    text: String,
    quoted: bool,
}

/// Split CSV data into records of fields.
fn records(text: &str, fmt: &CopyFormat) -> EngineResult<Vec<Vec<Field>>> {
    let (delimiter, quote) = (fmt.delimiter as char, fmt.quote as char);
    let mut out = vec![];
    let mut record: Vec<Field> = vec![];
    let mut field = Field {
        text: String::new(),
        quoted: false,
    };
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut at_record_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == quote {
                if chars.peek() == Some(&quote) {
                    field.text.push(quote);
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                if c == '\n' {
                    line += 1;
                }
                field.text.push(c);
            }
            continue;
        }
        match c {
            c if c == quote => {
                in_quotes = true;
                field.quoted = true;
                at_record_start = false;
            }
            c if c == delimiter => {
                record.push(std::mem::replace(
                    &mut field,
                    Field {
                        text: String::new(),
                        quoted: false,
                    },
                ));
                at_record_start = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if !at_record_start {
                    record.push(std::mem::replace(
                        &mut field,
                        Field {
                            text: String::new(),
                            quoted: false,
                        },
                    ));
                    out.push(std::mem::take(&mut record));
                }
                at_record_start = true;
                line += 1;
            }
            c => {
                field.text.push(c);
                at_record_start = false;
            }
        }
    }
    if in_quotes {
        return Err(bad(format!(
            "COPY: line {line}: unterminated CSV quoted field"
        )));
    }
    if !at_record_start {
        record.push(field);
        out.push(record);
    }
    Ok(out)
}

/// Decode CSV COPY data into a batch of `columns` (nullable).
pub(super) fn decode(
    data: &[u8],
    columns: &SchemaRef,
    fmt: &CopyFormat,
) -> EngineResult<RecordBatch> {
    let text = utf8(data)?;
    let mut rows = TextColumns::new(columns);
    let mut recs = records(text, fmt)?.into_iter().enumerate();
    if fmt.header {
        recs.next();
    }
    for (n, rec) in recs {
        // `\.` alone ends the data.
        if rec.len() == 1 && !rec[0].quoted && rec[0].text == "\\." {
            break;
        }
        let fields = rec
            .into_iter()
            .map(|f| (f.quoted || f.text != fmt.null).then_some(f.text))
            .collect();
        rows.push(format_args!("record {}", n + 1), fields)?;
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema};

    #[test]
    fn quoted_empty_is_text_unquoted_empty_is_null() {
        let fmt = CopyFormat {
            kind: crate::CopyKind::Csv,
            delimiter: b',',
            header: true,
            null: String::new(),
            quote: b'"',
        };
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("a", DataType::Utf8, true),
            ArrowField::new("b", DataType::Utf8, true),
        ]));
        let data = b"a,b\r\n\"\",\n\"x,\"\"y\"\"\nz\",w\n";
        let batch = decode(data, &schema, &fmt).expect("decodes");
        let a = batch.column(0).as_string::<i32>();
        let b = batch.column(1).as_string::<i32>();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(a.value(0), "");
        assert!(b.is_null(0));
        assert_eq!(a.value(1), "x,\"y\"\nz");
        assert_eq!(b.value(1), "w");
        assert!(decode(b"\"open\n", &schema, &fmt).is_err());
    }
}
