//! Arrow record batches → Postgres `DataRow`s, in text or binary format per column.
//!
//! Each batch is turned into rows as it arrives (the result is never collected whole). Columns
//! are first cast to one canonical Arrow type per Postgres type, then encoded cell by cell with
//! pgwire's encoders; binary columns are never stringified.

use std::error::Error;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray,
    ListArray, RecordBatch, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, IntervalUnit,
    TimeUnit,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions as ArrowFormatOptions};
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};
use rust_decimal::Decimal;

use super::types::pg_type;

/// Row description for an Arrow schema with the given per-column formats.
pub fn fields_for(
    schema: &datafusion::arrow::datatypes::Schema,
    format: impl Fn(usize) -> FieldFormat,
) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format(i),
            )
        })
        .collect()
}

/// A float with Postgres' text output (`7043`, `0.5`, `1e+20`, `NaN`, `Infinity`) and the usual
/// binary encoding. Postgres prints the shortest text that reads back exactly, switching to
/// exponent notation below 1e-4 and from 1e15 (float8) / 1e6 (float4) on.
#[derive(Debug, Clone, Copy)]
pub(super) struct PgFloat<T>(T);

fn pg_float_text(v: f64, shortest_exp: String, exp_limit: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `shortest_exp` is Rust's shortest round-trip `{:e}` form, e.g. `7.043e3`.
    let (mantissa, exp) = shortest_exp
        .split_once('e')
        .map(|(m, e)| (m.to_string(), e.parse::<i32>().unwrap_or(0)))
        .unwrap_or((shortest_exp.clone(), 0));
    if v != 0.0 && (exp < -4 || exp >= exp_limit) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        // Shortest round-trip digits without an exponent.
        let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
        let negative = mantissa.starts_with('-');
        let point = 1 + exp; // digits before the decimal point
        let mut out = String::new();
        if negative {
            out.push('-');
        }
        if point <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-point) as usize));
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            out.push_str(&"0".repeat(point as usize - digits.len()));
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
        if out == "-0" { "-0".into() } else { out }
    }
}

/// `ToSql` (binary, as the primitive) and `ToSqlText` (Postgres' float output) for a float type.
macro_rules! pg_float {
    ($t:ty, $pg:expr, $exp_limit:expr) => {
        impl ToSql for PgFloat<$t> {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut BytesMut,
            ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                self.0.to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                *ty == $pg
            }
            to_sql_checked!();
        }

        impl ToSqlText for PgFloat<$t> {
            fn to_sql_text(
                &self,
                _ty: &Type,
                out: &mut BytesMut,
                _format_options: &FormatOptions,
            ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                let text = pg_float_text(self.0 as f64, format!("{:e}", self.0), $exp_limit);
                out.put_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    };
}

pg_float!(f64, Type::FLOAT8, 15);
pg_float!(f32, Type::FLOAT4, 6);

/// A Postgres interval (months, days, microseconds) with text and binary encodings.
#[derive(Debug, Clone, Copy)]
pub(super) struct PgInterval {
    months: i32,
    days: i32,
    micros: i64,
}

impl ToSql for PgInterval {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i64(self.micros);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl ToSqlText for PgInterval {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.to_string().as_bytes());
        Ok(IsNull::No)
    }
}

impl std::fmt::Display for PgInterval {
    /// PostgreSQL's default `IntervalStyle = postgres` rendering, as its `EncodeInterval`
    /// writes it: `1 year 2 mons 3 days 04:05:06.5`, a unit plural unless the value is exactly
    /// 1 (`-1 years`), and a `+` on a positive part that follows a negative one
    /// (`-1 days +02:00:00`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let mut is_zero = true;
        let mut is_before = false;
        let (years, months) = (self.months / 12, self.months % 12);
        for (value, unit) in [(years, "year"), (months, "mon"), (self.days, "day")] {
            if value == 0 {
                continue;
            }
            if !is_zero {
                out.push(' ');
            }
            if is_before && value > 0 {
                out.push('+');
            }
            out.push_str(&format!(
                "{value} {unit}{}",
                if value != 1 { "s" } else { "" }
            ));
            is_before = value < 0;
            is_zero = false;
        }
        if is_zero || self.micros != 0 {
            if !is_zero {
                out.push(' ');
            }
            if self.micros < 0 {
                out.push('-');
            } else if is_before {
                out.push('+');
            }
            let m = self.micros.unsigned_abs();
            let (h, rem) = (m / 3_600_000_000, m % 3_600_000_000);
            let (mi, rem) = (rem / 60_000_000, rem % 60_000_000);
            let (sec, us) = (rem / 1_000_000, rem % 1_000_000);
            out.push_str(&format!("{h:02}:{mi:02}:{sec:02}"));
            if us != 0 {
                let frac = format!("{us:06}");
                out.push('.');
                out.push_str(frac.trim_end_matches('0'));
            }
        }
        f.write_str(&out)
    }
}

/// A timestamp rendered as Postgres renders it in text (`2024-01-02 03:04:05[.5][+00]`).
#[derive(Debug, Clone, Copy)]
struct PgTimestamp {
    micros: i64,
    with_tz: bool,
}

impl ToSql for PgTimestamp {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // Binary timestamps are microseconds since 2000-01-01.
        out.put_i64(self.micros - 946_684_800_000_000);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ
    }
    to_sql_checked!();
}

impl ToSqlText for PgTimestamp {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let dt = DateTime::<Utc>::from_timestamp_micros(self.micros)
            .ok_or("timestamp out of range")?
            .naive_utc();
        let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
        let frac = self.micros.rem_euclid(1_000_000);
        if frac != 0 {
            let f = format!("{frac:06}");
            s.push('.');
            s.push_str(f.trim_end_matches('0'));
        }
        if self.with_tz {
            s.push_str("+00");
        }
        out.put_slice(s.as_bytes());
        Ok(IsNull::No)
    }
}

/// Where the fields of one row are encoded: a `DataRow` of a result set, or a line of
/// `COPY … TO STDOUT` ([`super::copy_out`]) — the same value encoders for both.
pub(super) trait FieldSink {
    /// Encode the next field.
    fn encode_field<T: ToSql + ToSqlText + Sized>(&mut self, value: &T) -> PgWireResult<()>;
}

impl FieldSink for DataRowEncoder {
    fn encode_field<T: ToSql + ToSqlText + Sized>(&mut self, value: &T) -> PgWireResult<()> {
        DataRowEncoder::encode_field(self, value)
    }
}

/// One column of a batch, cast to its canonical type.
pub(super) enum Col {
    Bool(BooleanArray),
    I16(Int16Array),
    I32(Int32Array),
    I64(Int64Array),
    F32(Float32Array),
    F64(Float64Array),
    Dec(Decimal128Array, u32),
    Text(StringArray),
    Bytes(BinaryArray),
    Date(Date32Array),
    Time(Time64MicrosecondArray),
    Ts(TimestampMicrosecondArray),
    TsTz(TimestampMicrosecondArray),
    Interval(IntervalMonthDayNanoArray),
    List(ListArray, ListKind),
    Formatted(Vec<Option<String>>),
}

#[derive(Clone, Copy)]
pub(super) enum ListKind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Text,
}

fn to_pg_err(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::ApiError(format!("cannot encode result: {e}").into())
}

fn formatted(array: &ArrayRef) -> PgWireResult<Col> {
    let opts = ArrowFormatOptions::default();
    let f = ArrayFormatter::try_new(array.as_ref(), &opts).map_err(to_pg_err)?;
    Ok(Col::Formatted(
        (0..array.len())
            .map(|i| array.is_valid(i).then(|| f.value(i).to_string()))
            .collect(),
    ))
}

impl Col {
    /// The column `array`, ready to encode row by row.
    pub(super) fn new(array: &ArrayRef) -> PgWireResult<Col> {
        let c = |dt: DataType| cast(array, &dt).map_err(to_pg_err);
        Ok(match array.data_type() {
            DataType::Null => Col::Formatted(vec![None; array.len()]),
            DataType::Boolean => Col::Bool(array.as_boolean().clone()),
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
                Col::I16(c(DataType::Int16)?.as_primitive::<Int16Type>().clone())
            }
            DataType::Int32 | DataType::UInt16 => {
                Col::I32(c(DataType::Int32)?.as_primitive::<Int32Type>().clone())
            }
            DataType::Int64 | DataType::UInt32 => {
                Col::I64(c(DataType::Int64)?.as_primitive::<Int64Type>().clone())
            }
            DataType::Float16 | DataType::Float32 => {
                Col::F32(c(DataType::Float32)?.as_primitive::<Float32Type>().clone())
            }
            DataType::Float64 => Col::F64(array.as_primitive::<Float64Type>().clone()),
            DataType::UInt64 => decimal(&c(DataType::Decimal128(20, 0))?, 0)?,
            DataType::Decimal32(_, s)
            | DataType::Decimal64(_, s)
            | DataType::Decimal128(_, s)
            | DataType::Decimal256(_, s)
                if *s >= 0 && *s <= 28 =>
            {
                match c(DataType::Decimal128(38, *s)) {
                    Ok(a) => decimal(&a, *s as u32)?,
                    Err(_) => formatted(array)?,
                }
            }
            DataType::Utf8 => Col::Text(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
                if matches!(pg_type(array.data_type()), Type::TEXT) =>
            {
                Col::Text(c(DataType::Utf8)?.as_string::<i32>().clone())
            }
            DataType::Dictionary(_, v) => Col::new(&c(v.as_ref().clone())?)?,
            DataType::Binary => Col::Bytes(array.as_binary::<i32>().clone()),
            DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                Col::Bytes(c(DataType::Binary)?.as_binary::<i32>().clone())
            }
            DataType::Date32 | DataType::Date64 => {
                Col::Date(c(DataType::Date32)?.as_primitive().clone())
            }
            DataType::Time32(_) | DataType::Time64(_) => Col::Time(
                c(DataType::Time64(TimeUnit::Microsecond))?
                    .as_primitive()
                    .clone(),
            ),
            DataType::Timestamp(_, tz) => {
                let a = c(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?;
                let a = a.as_primitive().clone();
                if tz.is_some() {
                    Col::TsTz(a)
                } else {
                    Col::Ts(a)
                }
            }
            DataType::Interval(_) | DataType::Duration(_) => {
                match c(DataType::Interval(IntervalUnit::MonthDayNano)) {
                    Ok(a) => Col::Interval(a.as_primitive().clone()),
                    Err(_) => formatted(array)?,
                }
            }
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                let kind = match pg_type(f.data_type()) {
                    Type::BOOL => Some((ListKind::Bool, DataType::Boolean)),
                    Type::INT2 => Some((ListKind::I16, DataType::Int16)),
                    Type::INT4 => Some((ListKind::I32, DataType::Int32)),
                    Type::INT8 => Some((ListKind::I64, DataType::Int64)),
                    Type::FLOAT4 => Some((ListKind::F32, DataType::Float32)),
                    Type::FLOAT8 => Some((ListKind::F64, DataType::Float64)),
                    Type::TEXT => Some((ListKind::Text, DataType::Utf8)),
                    _ => None,
                };
                match kind {
                    Some((k, elem)) => {
                        let target = DataType::List(Arc::new(Field::new("item", elem, true)));
                        match c(target) {
                            Ok(a) => Col::List(a.as_list::<i32>().clone(), k),
                            Err(_) => formatted(array)?,
                        }
                    }
                    None => formatted(array)?,
                }
            }
            _ => formatted(array)?,
        })
    }

    /// Encode the value in `row` into `enc`.
    pub(super) fn encode<E: FieldSink>(&self, enc: &mut E, row: usize) -> PgWireResult<()> {
        macro_rules! prim {
            ($a:expr) => {
                enc.encode_field(&($a.is_valid(row).then(|| $a.value(row))))
            };
        }
        match self {
            Col::Bool(a) => prim!(a),
            Col::I16(a) => prim!(a),
            Col::I32(a) => prim!(a),
            Col::I64(a) => prim!(a),
            Col::F32(a) => enc.encode_field(&(a.is_valid(row).then(|| PgFloat(a.value(row))))),
            Col::F64(a) => enc.encode_field(&(a.is_valid(row).then(|| PgFloat(a.value(row))))),
            Col::Dec(a, scale) => enc.encode_field(
                &(a.is_valid(row)).then(|| Decimal::from_i128_with_scale(a.value(row), *scale)),
            ),
            Col::Text(a) => enc.encode_field(&(a.is_valid(row).then(|| a.value(row)))),
            Col::Bytes(a) => enc.encode_field(&(a.is_valid(row).then(|| a.value(row)))),
            Col::Date(a) => enc.encode_field(
                &a.is_valid(row)
                    .then(|| NaiveDate::from_num_days_from_ce_opt(a.value(row) + 719_163))
                    .flatten(),
            ),
            Col::Time(a) => enc.encode_field(
                &a.is_valid(row)
                    .then(|| {
                        let us = a.value(row);
                        NaiveTime::from_num_seconds_from_midnight_opt(
                            (us / 1_000_000) as u32,
                            ((us % 1_000_000) * 1000) as u32,
                        )
                    })
                    .flatten(),
            ),
            Col::Ts(a) => enc.encode_field(&a.is_valid(row).then(|| PgTimestamp {
                micros: a.value(row),
                with_tz: false,
            })),
            Col::TsTz(a) => enc.encode_field(&a.is_valid(row).then(|| PgTimestamp {
                micros: a.value(row),
                with_tz: true,
            })),
            Col::Interval(a) => enc.encode_field(&a.is_valid(row).then(|| {
                let v = a.value(row);
                PgInterval {
                    months: v.months,
                    days: v.days,
                    micros: v.nanoseconds / 1000,
                }
            })),
            Col::List(a, kind) => {
                if a.is_null(row) {
                    return enc.encode_field(&None::<Vec<Option<i64>>>);
                }
                let values = a.value(row);
                macro_rules! list {
                    ($t:ty) => {{
                        let v = values.as_primitive::<$t>();
                        let items: Vec<Option<_>> = (0..v.len())
                            .map(|i| v.is_valid(i).then(|| v.value(i)))
                            .collect();
                        enc.encode_field(&items)
                    }};
                }
                match kind {
                    ListKind::Bool => {
                        let v = values.as_boolean();
                        let items: Vec<Option<bool>> = (0..v.len())
                            .map(|i| v.is_valid(i).then(|| v.value(i)))
                            .collect();
                        enc.encode_field(&items)
                    }
                    ListKind::I16 => list!(Int16Type),
                    ListKind::I32 => list!(Int32Type),
                    ListKind::I64 => list!(Int64Type),
                    ListKind::F32 => list!(Float32Type),
                    ListKind::F64 => list!(Float64Type),
                    ListKind::Text => {
                        let v = values.as_string::<i32>();
                        let items: Vec<Option<&str>> = (0..v.len())
                            .map(|i| v.is_valid(i).then(|| v.value(i)))
                            .collect();
                        enc.encode_field(&items)
                    }
                }
            }
            Col::Formatted(v) => enc.encode_field(&v[row].as_deref()),
        }
    }
}

fn decimal(a: &ArrayRef, scale: u32) -> PgWireResult<Col> {
    Ok(Col::Dec(a.as_primitive().clone(), scale))
}

/// Encode every row of `batch`.
pub(super) fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<DataRow>> {
    let cols = batch
        .columns()
        .iter()
        .map(Col::new)
        .collect::<PgWireResult<Vec<_>>>()?;
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for col in &cols {
            col.encode(&mut encoder, row)?;
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_text_matches_postgres() {
        let t = |v: f64| pg_float_text(v, format!("{v:e}"), 15);
        assert_eq!(t(7043.0), "7043");
        assert_eq!(t(0.5), "0.5");
        assert_eq!(t(-2.25), "-2.25");
        assert_eq!(t(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(t(1e20), "1e+20");
        assert_eq!(t(1.5e-5), "1.5e-05");
        assert_eq!(t(0.0001), "0.0001");
        assert_eq!(t(123456789012345.0), "123456789012345");
        assert_eq!(t(1e15), "1e+15");
        assert_eq!(t(0.0), "0");
        assert_eq!(t(f64::NAN), "NaN");
        assert_eq!(t(f64::NEG_INFINITY), "-Infinity");
        let f = |v: f32| pg_float_text(v as f64, format!("{v:e}"), 6);
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1234567.0), "1.234567e+06");
    }

    #[test]
    fn interval_text_matches_postgres() {
        let i = PgInterval {
            months: 14,
            days: 3,
            micros: 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000,
        };
        assert_eq!(i.to_string(), "1 year 2 mons 3 days 04:05:06.5");
        let zero = PgInterval {
            months: 0,
            days: 0,
            micros: 0,
        };
        assert_eq!(zero.to_string(), "00:00:00");
        let iv = |months, days, micros| {
            PgInterval {
                months,
                days,
                micros,
            }
            .to_string()
        };
        assert_eq!(iv(-12, 0, 0), "-1 years");
        assert_eq!(iv(1, 1, 0), "1 mon 1 day");
        assert_eq!(iv(0, -1, 7_200_000_000), "-1 days +02:00:00");
        assert_eq!(iv(-14, 3, -1_000_000), "-1 years -2 mons +3 days -00:00:01");
        assert_eq!(iv(13, 0, 0), "1 year 1 mon");
    }
}
