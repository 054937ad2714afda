//! Bind parameters → DataFusion scalar values.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use rust_decimal::Decimal;

use super::PgStatement;
use super::types::pg_type;
use crate::error::{EngineError, EngineResult, StatusCode};

/// Decode every bound parameter of `portal`.
///
/// The type of parameter `i` is the one the client declared in `Parse`, else the one the
/// planner inferred, else `text` (DataFusion casts it where it is used).
pub(super) fn decode_all(
    portal: &Portal<PgStatement>,
    client_types: &[Option<Type>],
    inferred: &[Option<DataType>],
) -> EngineResult<Vec<ScalarValue>> {
    (0..portal.parameter_len())
        .map(|i| {
            let ty = client_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| inferred.get(i).cloned().flatten().map(|dt| pg_type(&dt)))
                .unwrap_or(Type::TEXT);
            decode(portal, i, &ty)
        })
        .collect()
}

fn bad(i: usize, ty: &Type, e: impl std::fmt::Display) -> EngineError {
    EngineError::statement(
        StatusCode::InvalidTextRepresentation,
        format!(
            "invalid input for parameter ${} of type {}: {e}",
            i + 1,
            ty.name()
        ),
    )
}

fn decode(portal: &Portal<PgStatement>, i: usize, ty: &Type) -> EngineResult<ScalarValue> {
    macro_rules! get {
        ($t:ty) => {
            portal.parameter::<$t>(i, ty).map_err(|e| bad(i, ty, e))?
        };
    }
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(get!(bool)),
        Type::INT2 => ScalarValue::Int16(get!(i16)),
        Type::INT4 => ScalarValue::Int32(get!(i32)),
        Type::INT8 => ScalarValue::Int64(get!(i64)),
        Type::OID => ScalarValue::Int64(get!(u32).map(i64::from)),
        Type::FLOAT4 => ScalarValue::Float32(get!(f32)),
        Type::FLOAT8 => ScalarValue::Float64(get!(f64)),
        Type::NUMERIC => match get!(Decimal) {
            Some(d) => ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8),
            None => ScalarValue::Decimal128(None, 38, 10),
        },
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(get!(String))
        }
        Type::BYTEA => ScalarValue::Binary(get!(Vec<u8>)),
        Type::DATE => ScalarValue::Date32(get!(NaiveDate).map(|d| (d - epoch()).num_days() as i32)),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            get!(NaiveDateTime).map(|t| t.and_utc().timestamp_micros()),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            get!(DateTime<FixedOffset>).map(|t| t.timestamp_micros()),
            Some("UTC".into()),
        ),
        Type::INT2_ARRAY => list(
            get!(Vec<Option<i16>>).map(|v| v.into_iter().map(ScalarValue::Int16).collect()),
            DataType::Int16,
        ),
        Type::INT4_ARRAY => list(
            get!(Vec<Option<i32>>).map(|v| v.into_iter().map(ScalarValue::Int32).collect()),
            DataType::Int32,
        ),
        Type::INT8_ARRAY => list(
            get!(Vec<Option<i64>>).map(|v| v.into_iter().map(ScalarValue::Int64).collect()),
            DataType::Int64,
        ),
        Type::FLOAT8_ARRAY => list(
            get!(Vec<Option<f64>>).map(|v| v.into_iter().map(ScalarValue::Float64).collect()),
            DataType::Float64,
        ),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => list(
            get!(Vec<Option<String>>).map(|v| v.into_iter().map(ScalarValue::Utf8).collect()),
            DataType::Utf8,
        ),
        _ => {
            // Any other type: take the text form and let DataFusion cast it where it is used.
            if portal.parameter_format.is_binary(i) {
                return Err(EngineError::statement(
                    StatusCode::FeatureNotSupported,
                    format!("binary parameters of type {} are not supported", ty.name()),
                ));
            }
            let raw = portal.parameters.get(i).cloned().flatten();
            ScalarValue::Utf8(raw.map(|b| String::from_utf8_lossy(&b).into_owned()))
        }
    })
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

fn list(values: Option<Vec<ScalarValue>>, elem: DataType) -> ScalarValue {
    match values {
        Some(v) => ScalarValue::List(ScalarValue::new_list_nullable(&v, &elem)),
        None => ScalarValue::try_from(DataType::List(std::sync::Arc::new(
            datafusion::arrow::datatypes::Field::new("item", elem, true),
        )))
        .unwrap_or(ScalarValue::Null),
    }
}
