//! Time columns of series: their Arrow types as integer ticks and back, and the season lengths
//! worth testing for a step.
//!
//! A time column may be a timestamp (any unit, with or without time zone), a date or an
//! integer. It is handled as `i64` ticks of its own unit (dates: days) and forecast times are
//! written back in the same type. Times that fall on calendar months (monthly, quarterly,
//! yearly data) are not evenly spaced in ticks: [`TimeAxis::Months`] numbers them by month.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::error::ArrowError;
use serde::{Deserialize, Serialize};

const NANOS_PER_SECOND: i128 = 1_000_000_000;

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
    } else if step_ns < 300 * DAY {
        vec![4]
    } else {
        vec![]
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

/// How a series' times map onto the even grid its values are regularised on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimeAxis {
    /// The column's own ticks.
    #[default]
    Ticks,
    /// Calendar months (monthly, quarterly or yearly data, whose steps of 28 to 31 days are
    /// not even in ticks): a time is its month number, year × 12 + month − 1, and is written
    /// back on day `day` of its month (0 = the month's last day), `time_of_day` nanoseconds
    /// after midnight (UTC).
    Months {
        /// Day of the month, 1 to 28; 0 = the last day.
        day: u32,
        /// Nanoseconds after midnight.
        time_of_day: i64,
    },
}

/// A tick of `nanos` nanoseconds as a UTC date and time.
fn datetime(tick: i64, nanos: i64) -> Option<NaiveDateTime> {
    let ns = tick as i128 * nanos as i128;
    let secs = i64::try_from(ns.div_euclid(NANOS_PER_SECOND)).ok()?;
    let sub = ns.rem_euclid(NANOS_PER_SECOND) as u32;
    DateTime::from_timestamp(secs, sub).map(|d| d.naive_utc())
}

fn is_last_day(d: NaiveDate) -> bool {
    d.succ_opt().is_some_and(|n| n.month() != d.month())
}

impl TimeAxis {
    /// The axis of a series with these times (ticks of `nanos` ns; 0 = plain integers):
    /// [`TimeAxis::Months`] when there are at least two distinct months and every time is on
    /// the same day of its month (1 to 28, or every one on its month's last day) at the same
    /// time of day; else [`TimeAxis::Ticks`].
    pub fn detect(ticks: impl IntoIterator<Item = i64>, nanos: i64) -> TimeAxis {
        if nanos <= 0 {
            return TimeAxis::Ticks;
        }
        let mut day: Option<u32> = None;
        let (mut same_day, mut all_last) = (true, true);
        let mut time_of_day: Option<i64> = None;
        let mut months: Option<(i64, bool)> = None;
        for t in ticks {
            let Some(dt) = datetime(t, nanos) else {
                return TimeAxis::Ticks;
            };
            let tod =
                dt.num_seconds_from_midnight() as i64 * 1_000_000_000 + dt.nanosecond() as i64;
            if *time_of_day.get_or_insert(tod) != tod {
                return TimeAxis::Ticks;
            }
            let d = dt.date();
            same_day &= *day.get_or_insert(d.day()) == d.day();
            all_last &= is_last_day(d);
            if !(same_day || all_last) {
                return TimeAxis::Ticks;
            }
            let month = d.year() as i64 * 12 + d.month0() as i64;
            months = match months {
                None => Some((month, false)),
                Some((m, several)) => Some((m, several || m != month)),
            };
        }
        let several = months.is_some_and(|m| m.1);
        let time_of_day = time_of_day.unwrap_or(0);
        match day {
            Some(d) if several && same_day && d <= 28 => TimeAxis::Months {
                day: d,
                time_of_day,
            },
            Some(_) if several && all_last => TimeAxis::Months {
                day: 0,
                time_of_day,
            },
            _ => TimeAxis::Ticks,
        }
    }

    /// Whether this is [`TimeAxis::Ticks`].
    pub fn is_ticks(&self) -> bool {
        *self == TimeAxis::Ticks
    }

    /// A tick on this axis.
    pub fn to_axis(&self, tick: i64, nanos: i64) -> i64 {
        match self {
            TimeAxis::Ticks => tick,
            TimeAxis::Months { .. } => {
                datetime(tick, nanos).map_or(tick, |d| d.year() as i64 * 12 + d.month0() as i64)
            }
        }
    }

    /// A point of this axis as a tick.
    pub fn to_tick(&self, point: i64, nanos: i64) -> i64 {
        match *self {
            TimeAxis::Ticks => point,
            TimeAxis::Months { day, time_of_day } => {
                let year = i32::try_from(point.div_euclid(12)).unwrap_or(i32::MAX);
                let month = point.rem_euclid(12) as u32 + 1;
                let date = if day == 0 {
                    NaiveDate::from_ymd_opt(year, month, 1)
                        .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
                        .and_then(|d| d.pred_opt())
                } else {
                    NaiveDate::from_ymd_opt(year, month, day)
                };
                let Some(date) = date else {
                    return i64::MAX;
                };
                let secs = date
                    .and_hms_opt(0, 0, 0)
                    .map_or(0, |d| d.and_utc().timestamp());
                let ns = secs as i128 * NANOS_PER_SECOND + time_of_day as i128;
                i64::try_from(ns / nanos.max(1) as i128).unwrap_or(i64::MAX)
            }
        }
    }

    /// `(tick, value)` rows with their ticks moved onto this axis (in place).
    pub fn rows_on_axis(
        &self,
        mut rows: Vec<(i64, Option<f64>)>,
        nanos: i64,
    ) -> Vec<(i64, Option<f64>)> {
        if !self.is_ticks() {
            for r in &mut rows {
                r.0 = self.to_axis(r.0, nanos);
            }
        }
        rows
    }

    /// Season lengths worth testing for a step of `step` points on this axis.
    pub fn season_candidates(&self, step: i64, nanos: i64) -> Vec<usize> {
        match self {
            TimeAxis::Ticks => season_candidates(step, nanos),
            TimeAxis::Months { .. } => match step {
                1 => vec![12],
                2 => vec![6],
                3 => vec![4],
                4 => vec![3],
                6 => vec![2],
                _ => vec![],
            },
        }
    }

    /// Nanoseconds per point for calendar features (0 on a month axis: its points are not
    /// durations; a season of 12 months gives the month of the year instead).
    pub fn calendar_nanos(&self, nanos: i64) -> i64 {
        match self {
            TimeAxis::Ticks => nanos,
            TimeAxis::Months { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    fn days(dates: &[(i32, u32, u32)]) -> Vec<i64> {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        dates
            .iter()
            .map(|&(y, m, d)| (NaiveDate::from_ymd_opt(y, m, d).expect("date") - epoch).num_days())
            .collect()
    }

    #[test]
    fn month_starts_month_ends_and_quarters_are_a_month_axis() {
        let starts = days(&[(2024, 1, 1), (2024, 2, 1), (2024, 3, 1)]);
        let axis = TimeAxis::detect(starts.iter().copied(), DAY);
        assert_eq!(
            axis,
            TimeAxis::Months {
                day: 1,
                time_of_day: 0
            }
        );
        let points: Vec<i64> = starts.iter().map(|&t| axis.to_axis(t, DAY)).collect();
        assert_eq!(points, vec![2024 * 12, 2024 * 12 + 1, 2024 * 12 + 2]);
        // The next month, and round trips.
        assert_eq!(axis.to_tick(2024 * 12 + 3, DAY), days(&[(2024, 4, 1)])[0]);
        assert_eq!(axis.to_tick(points[1], DAY), starts[1]);

        let ends = days(&[(2023, 12, 31), (2024, 1, 31), (2024, 2, 29), (2024, 3, 31)]);
        let axis = TimeAxis::detect(ends.iter().copied(), DAY);
        assert_eq!(
            axis,
            TimeAxis::Months {
                day: 0,
                time_of_day: 0
            }
        );
        assert_eq!(axis.to_tick(2024 * 12 + 3, DAY), days(&[(2024, 4, 30)])[0]);
        assert_eq!(axis.to_tick(2025 * 12 + 1, DAY), days(&[(2025, 2, 28)])[0]);

        // Quarters at noon, as microsecond timestamps.
        let us = 1_000;
        let q: Vec<i64> = days(&[(2024, 1, 15), (2024, 4, 15), (2024, 7, 15)])
            .iter()
            .map(|d| (d * DAY + 12 * 3_600_000_000_000) / us)
            .collect();
        let axis = TimeAxis::detect(q.iter().copied(), us);
        assert_eq!(
            axis,
            TimeAxis::Months {
                day: 15,
                time_of_day: 12 * 3_600_000_000_000
            }
        );
        assert_eq!(axis.season_candidates(3, us), vec![4]);
        assert_eq!(
            axis.to_tick(axis.to_axis(q[2], us) + 3, us),
            q[2] + 92 * DAY / us
        );
    }

    #[test]
    fn daily_weekly_and_integer_times_keep_their_ticks() {
        let daily = days(&[(2024, 1, 1), (2024, 1, 2), (2024, 1, 3)]);
        assert!(TimeAxis::detect(daily, DAY).is_ticks());
        let weekly = days(&[(2024, 1, 1), (2024, 1, 8), (2024, 1, 15)]);
        assert!(TimeAxis::detect(weekly, DAY).is_ticks());
        assert!(TimeAxis::detect([1, 2, 3], 0).is_ticks());
        // One month only, or days 29 to 31 that are not month ends.
        assert!(TimeAxis::detect(days(&[(2024, 1, 1), (2024, 1, 1)]), DAY).is_ticks());
        assert!(TimeAxis::detect(days(&[(2024, 1, 30), (2024, 3, 30)]), DAY).is_ticks());
    }

    #[test]
    fn yearly_steps_have_no_season() {
        assert!(season_candidates(365, DAY).is_empty());
        assert_eq!(season_candidates(91, DAY), vec![4]);
        let axis = TimeAxis::Months {
            day: 1,
            time_of_day: 0,
        };
        assert!(axis.season_candidates(12, DAY).is_empty());
        assert_eq!(axis.season_candidates(1, DAY), vec![12]);
    }
}
