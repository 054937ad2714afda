//! `COPY … FROM STDIN (FORMAT binary)`: PostgreSQL's binary COPY stream decoded into Arrow
//! columns of the target table's types.
//!
//! The stream is the `PGCOPY\n\377\r\n\0` signature, a flags word and a header extension,
//! then one tuple per row (a field count, then each field as a length — -1 for NULL — and
//! the value in PostgreSQL's binary send format, network byte order), ended by a field count
//! of -1 or by the end of the data. Fields carry no type: each is read as the type the target column is sent as (the
//! type a client sees in the table's description). Integers and floats also accept the
//! narrower or wider width a client may send (an `int4` into a `bigint` column).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, IntervalMonthDayNanoBuilder, RecordBatch, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, SchemaRef};

use crate::error::{EngineError, EngineResult, StatusCode};

const SIGNATURE: &[u8] = b"PGCOPY\n\xFF\r\n\x00";
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS as i64 * 86_400_000_000;

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::statement(
        StatusCode::InvalidTextRepresentation,
        format!("COPY binary: {}", msg.into()),
    )
}

/// A cursor over the stream.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> EngineResult<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| bad("unexpected end of data"))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn i16(&mut self) -> EngineResult<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> EngineResult<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// How one target column's values are read.
enum Column {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    Numeric(Decimal128Builder, i8),
}

impl Column {
    fn for_type(t: &DataType) -> EngineResult<Column> {
        Ok(match t {
            DataType::Boolean => Column::Bool(BooleanBuilder::new()),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Column::Int(Int64Builder::new()),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                Column::Float(Float64Builder::new())
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Column::Text(StringBuilder::new())
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                Column::Bytes(BinaryBuilder::new())
            }
            DataType::Date32 | DataType::Date64 => Column::Date(Date32Builder::new()),
            DataType::Time32(_) | DataType::Time64(_) => {
                Column::Time(Time64MicrosecondBuilder::new())
            }
            DataType::Timestamp(_, tz) => {
                Column::Timestamp(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Interval(_) => Column::Interval(IntervalMonthDayNanoBuilder::new()),
            DataType::Decimal128(p, s) => Column::Numeric(
                Decimal128Builder::new().with_precision_and_scale(*p, *s)?,
                *s,
            ),
            other => {
                return Err(EngineError::statement(
                    StatusCode::FeatureNotSupported,
                    format!(
                        "COPY binary: columns of type {other} are not supported; use text or csv"
                    ),
                ));
            }
        })
    }

    fn null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::Int(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Text(b) => b.append_null(),
            Column::Bytes(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Time(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
            Column::Interval(b) => b.append_null(),
            Column::Numeric(b, _) => b.append_null(),
        }
    }

    fn value(&mut self, v: &[u8]) -> EngineResult<()> {
        let fixed = |n: usize| -> EngineResult<()> {
            if v.len() == n {
                Ok(())
            } else {
                Err(bad(format!(
                    "a field of {} bytes where {n} belong",
                    v.len()
                )))
            }
        };
        match self {
            Column::Bool(b) => {
                fixed(1)?;
                b.append_value(v[0] != 0);
            }
            Column::Int(b) => b.append_value(match v.len() {
                2 => i16::from_be_bytes([v[0], v[1]]) as i64,
                4 => i32::from_be_bytes([v[0], v[1], v[2], v[3]]) as i64,
                8 => i64::from_be_bytes(be8(v)),
                n => return Err(bad(format!("an integer of {n} bytes"))),
            }),
            Column::Float(b) => b.append_value(match v.len() {
                4 => f32::from_be_bytes([v[0], v[1], v[2], v[3]]) as f64,
                8 => f64::from_be_bytes(be8(v)),
                n => return Err(bad(format!("a float of {n} bytes"))),
            }),
            Column::Text(b) => b.append_value(
                std::str::from_utf8(v).map_err(|_| bad("text that is not valid UTF-8"))?,
            ),
            Column::Bytes(b) => b.append_value(v),
            Column::Date(b) => {
                fixed(4)?;
                let days = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                b.append_value(
                    days.checked_add(PG_EPOCH_DAYS)
                        .ok_or_else(|| bad("date out of range"))?,
                );
            }
            Column::Time(b) => {
                fixed(8)?;
                b.append_value(i64::from_be_bytes(be8(v)));
            }
            Column::Timestamp(b) => {
                fixed(8)?;
                let us = i64::from_be_bytes(be8(v));
                b.append_value(
                    us.checked_add(PG_EPOCH_MICROS)
                        .ok_or_else(|| bad("timestamp out of range"))?,
                );
            }
            Column::Interval(b) => {
                fixed(16)?;
                let micros = i64::from_be_bytes(be8(&v[..8]));
                let days = i32::from_be_bytes([v[8], v[9], v[10], v[11]]);
                let months = i32::from_be_bytes([v[12], v[13], v[14], v[15]]);
                let nanos = micros
                    .checked_mul(1000)
                    .ok_or_else(|| bad("interval out of range"))?;
                b.append_value(IntervalMonthDayNano::new(months, days, nanos));
            }
            Column::Numeric(b, scale) => b.append_value(numeric(v, *scale)?),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Text(mut b) => Arc::new(b.finish()),
            Column::Bytes(mut b) => Arc::new(b.finish()),
            Column::Date(mut b) => Arc::new(b.finish()),
            Column::Time(mut b) => Arc::new(b.finish()),
            Column::Timestamp(mut b) => Arc::new(b.finish()),
            Column::Interval(mut b) => Arc::new(b.finish()),
            Column::Numeric(mut b, _) => Arc::new(b.finish()),
        }
    }
}

fn be8(v: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&v[..8]);
    a
}

/// A PostgreSQL binary `numeric` (digit count, weight, sign, display scale, then base-10000
/// digits) as an integer at `scale` decimal places.
fn numeric(v: &[u8], scale: i8) -> EngineResult<i128> {
    let mut r = Reader { data: v, at: 0 };
    let ndigits = r.i16()?;
    let weight = r.i16()? as i32;
    let sign = r.i16()? as u16;
    let _dscale = r.i16()?;
    if sign == 0xC000 {
        return Err(bad("NaN cannot be stored in a numeric column here"));
    }
    let overflow = || bad("numeric value out of range");
    // value = sum(digit[i] * 10000^(weight - i)); scaled by 10^scale.
    let mut out: i128 = 0;
    for i in 0..ndigits.max(0) as i32 {
        let digit = r.i16()? as i128;
        let exp = (weight - i) * 4 + scale as i32;
        let term = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|p| digit.checked_mul(p))
                .ok_or_else(overflow)?
        } else {
            // Digits below the column's scale are rounded off, as a cast would.
            let p = 10i128.checked_pow((-exp) as u32).unwrap_or(i128::MAX);
            (digit + p / 2) / p
        };
        out = out.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if sign == 0x4000 { -out } else { out })
}

/// Decode a binary COPY stream into a batch of `columns` (nullable), cast to their types.
pub(super) fn decode(data: &[u8], columns: &SchemaRef) -> EngineResult<RecordBatch> {
    let mut r = Reader { data, at: 0 };
    if r.take(SIGNATURE.len())? != SIGNATURE {
        return Err(bad("missing the PGCOPY signature"));
    }
    let flags = r.i32()?;
    if flags & (1 << 16) != 0 {
        return Err(bad("OIDs in COPY data are not supported"));
    }
    let extension = r.i32()?;
    r.take(usize::try_from(extension).map_err(|_| bad("negative header extension"))?)?;
    let mut builders = columns
        .fields()
        .iter()
        .map(|f| Column::for_type(f.data_type()))
        .collect::<EngineResult<Vec<_>>>()?;
    // The end: a field count of -1, or (as PostgreSQL also takes it) the end of the data
    // where a tuple would begin.
    while r.at < data.len() {
        let count = r.i16()?;
        if count == -1 {
            break;
        }
        if count as usize != builders.len() {
            return Err(bad(format!(
                "a row of {count} fields for {} columns",
                builders.len()
            )));
        }
        for b in builders.iter_mut() {
            let len = r.i32()?;
            if len == -1 {
                b.null();
            } else {
                let len = usize::try_from(len).map_err(|_| bad("negative field length"))?;
                b.value(r.take(len)?)?;
            }
        }
    }
    let arrays = builders
        .into_iter()
        .zip(columns.fields())
        .map(|(b, f)| {
            let a = b.finish();
            if a.data_type() == f.data_type() {
                Ok(a)
            } else {
                cast(&a, f.data_type()).map_err(|e| bad(format!("column \"{}\": {e}", f.name())))
            }
        })
        .collect::<EngineResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(columns), arrays)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema, TimeUnit};

    fn micros(tz: Option<&str>) -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into))
    }

    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut s = SIGNATURE.to_vec();
        s.extend(0i32.to_be_bytes());
        s.extend(0i32.to_be_bytes());
        for row in rows {
            s.extend((row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => s.extend((-1i32).to_be_bytes()),
                    Some(v) => {
                        s.extend((v.len() as i32).to_be_bytes());
                        s.extend(v);
                    }
                }
            }
        }
        s.extend((-1i16).to_be_bytes());
        s
    }

    #[test]
    fn decodes_rows_of_several_types() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("at", micros(None), true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
        ]));
        // 1234.5 as numeric: digits [1234, 5000], weight 0, dscale 1.
        let mut num = vec![];
        for x in [2i16, 0, 0, 1, 1234, 5000] {
            num.extend(x.to_be_bytes());
        }
        let data = stream(&[
            vec![
                Some(7i32.to_be_bytes().to_vec()),
                Some(b"seven".to_vec()),
                Some(86_400_000_000i64.to_be_bytes().to_vec()),
                Some(num),
            ],
            vec![None, None, None, None],
        ]);
        let batch = decode(&data, &schema).expect("decodes");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "seven");
        let at = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(at.value(0), PG_EPOCH_MICROS + 86_400_000_000);
        let amount = batch
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        assert_eq!(amount.value(0), 123_450);
        assert!(batch.columns().iter().all(|c| c.is_null(1)));
    }

    #[test]
    fn truncated_or_foreign_streams_are_errors() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let data = stream(&[vec![Some(7i64.to_be_bytes().to_vec())]]);
        assert!(decode(&data[..data.len() - 5], &schema).is_err());
        assert!(decode(b"id\n1\n", &schema).is_err());
        let two = stream(&[vec![None, None]]);
        assert!(decode(&two, &schema).is_err());
    }
}
