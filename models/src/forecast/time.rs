//! Time columns of series: their Arrow types as integer ticks and back, and the season lengths
//! worth testing for a step.
//!
//! A time column may be a timestamp (any unit, with or without time zone), a date or an
//! integer. It is handled as `i64` ticks of its own unit (dates: days) and forecast times are
//! written back in the same type.

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::error::ArrowError;

/// Nanoseconds in one tick of a time type (dates count days; 0 = plain integers, whose step
/// is not a duration). `None` for types that cannot be a series' time.
pub fn unit_nanos(t: &DataType) -> Option<i64> {
    Some(match t {
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Date64 => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
        DataType::Date32 => 86_400_000_000_000,
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::UInt32 => 0,
        _ => return None,
    })
}

/// Season lengths worth testing for a step of `step` ticks of `nanos` nanoseconds each.
pub fn season_candidates(step: i64, nanos: i64) -> Vec<usize> {
    const HOUR: i64 = 3_600_000_000_000;
    const DAY: i64 = 24 * HOUR;
    if nanos == 0 || step <= 0 {
        return vec![4, 7, 12, 24];
    }
    let step_ns = step.saturating_mul(nanos);
    let per = |span: i64| (span / step_ns) as usize;
    let mut c: Vec<usize> = if step_ns < HOUR {
        vec![per(HOUR), per(DAY), per(7 * DAY)]
    } else if step_ns < DAY {
        vec![per(DAY), per(7 * DAY)]
    } else if step_ns < 7 * DAY {
        vec![per(7 * DAY), per(365 * DAY)]
    } else if step_ns < 28 * DAY {
        vec![52]
    } else if step_ns < 90 * DAY {
        vec![12]
    } else {
        vec![4]
    };
    c.retain(|&m| m >= 2);
    c
}

/// A time column as `Int64` ticks.
pub fn times_as_i64(a: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    match a.data_type() {
        DataType::Date32 => cast(&cast(a, &DataType::Int32)?, &DataType::Int64),
        _ => cast(a, &DataType::Int64),
    }
}

/// Ticks back as a column of `time_type`.
pub fn times_from_i64(ticks: Vec<i64>, time_type: &DataType) -> Result<ArrayRef, ArrowError> {
    let ticks = Int64Array::from(ticks);
    match time_type {
        DataType::Date32 => cast(&cast(&ticks, &DataType::Int32)?, &DataType::Date32),
        t => cast(&ticks, t),
    }
}
