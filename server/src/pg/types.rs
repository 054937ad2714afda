//! Arrow ⇄ Postgres type mapping.

use datafusion::arrow::datatypes::DataType;
use pgwire::api::Type;

/// The Postgres type a column of `dt` is sent as.
pub(super) fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::Null => Type::TEXT,
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal32(_, _) | DataType::Decimal64(_, _) => Type::NUMERIC,
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        DataType::Dictionary(_, v) => pg_type(v),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match pg_type(f.data_type()) {
                Type::BOOL => Type::BOOL_ARRAY,
                Type::INT2 => Type::INT2_ARRAY,
                Type::INT4 => Type::INT4_ARRAY,
                Type::INT8 => Type::INT8_ARRAY,
                Type::FLOAT4 => Type::FLOAT4_ARRAY,
                Type::FLOAT8 => Type::FLOAT8_ARRAY,
                Type::NUMERIC => Type::NUMERIC_ARRAY,
                Type::DATE => Type::DATE_ARRAY,
                Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
                Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
                _ => Type::TEXT_ARRAY,
            }
        }
        // Structs, maps, unions: sent as their text rendering.
        _ => Type::TEXT,
    }
}
