//! Turning raw `(time, value)` rows into a regular series.
//!
//! Policy (documented in the README): rows are sorted by time; the step is the most common
//! difference between consecutive distinct times; each row goes to the nearest step of the
//! grid that starts at the first time; rows landing on the same step (duplicates) are
//! averaged; steps without a value (gaps, NULL values) are filled by linear interpolation
//! between their neighbours; leading and trailing NULLs are dropped. Every adjustment is
//! counted in `notes`, which the server sends as NOTICEs.

use crate::error::{ModelError, ModelResult};

/// Longest regular series built from one input series.
pub const MAX_POINTS: usize = 5_000_000;

/// A regular series.
#[derive(Debug, Clone, PartialEq)]
pub struct Regularized {
    /// Time of the first value (the unit of the input).
    pub start: i64,
    /// Step between values; 0 when there is a single value.
    pub step: i64,
    /// Values, one per step, no NaN.
    pub values: Vec<f64>,
    /// What was adjusted (duplicates averaged, gaps filled, NULLs dropped).
    pub notes: Vec<String>,
}

/// Build a regular series from unsorted rows (`None` = NULL value). `step` overrides the
/// inferred one.
pub fn regularize(rows: &[(i64, Option<f64>)], step: Option<i64>) -> ModelResult<Regularized> {
    let mut rows: Vec<(i64, Option<f64>)> = rows.to_vec();
    let unsorted = rows.windows(2).any(|w| w[1].0 < w[0].0);
    rows.sort_by_key(|r| r.0);
    // Leading / trailing NULL values carry nothing to interpolate from.
    let first = rows.iter().position(|r| r.1.is_some_and(f64::is_finite));
    let last = rows.iter().rposition(|r| r.1.is_some_and(f64::is_finite));
    let (Some(first), Some(last)) = (first, last) else {
        return Err(ModelError::BadTrainingData(
            "the series has no non-NULL values".into(),
        ));
    };
    let mut notes = vec![];
    let dropped = first + (rows.len() - 1 - last);
    if dropped > 0 {
        notes.push(format!("{dropped} leading/trailing NULL value(s) dropped"));
    }
    let rows = &rows[first..=last];
    let step = match step {
        Some(s) if s > 0 => s,
        Some(s) => {
            return Err(ModelError::InvalidParameter(format!(
                "the step must be positive, got {s}"
            )));
        }
        None => {
            let mut diffs: Vec<i64> = rows
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .filter(|d| *d > 0)
                .collect();
            diffs.sort_unstable();
            let mut best = (0i64, 0usize);
            let mut i = 0;
            while i < diffs.len() {
                let j = diffs[i..].partition_point(|d| *d == diffs[i]) + i;
                if j - i > best.1 {
                    best = (diffs[i], j - i);
                }
                i = j;
            }
            best.0
        }
    };
    let start = rows[0].0;
    if step == 0 {
        let vals: Vec<f64> = rows.iter().filter_map(|r| r.1).collect();
        if vals.len() > 1 {
            notes.push(format!("{} rows at the same time averaged", vals.len()));
        }
        return Ok(Regularized {
            start,
            step: 0,
            values: vec![vals.iter().sum::<f64>() / vals.len() as f64],
            notes,
        });
    }
    let span = (rows[rows.len() - 1].0 - start) as i128;
    let len = (span + step as i128 / 2) / step as i128 + 1;
    if len > MAX_POINTS as i128 {
        return Err(ModelError::BadTrainingData(format!(
            "the series would have {len} steps of {step} (more than {MAX_POINTS}); \
             are the times irregular?"
        )));
    }
    let len = len as usize;
    let off_grid = rows
        .iter()
        .filter(|(t, _)| (t - start) as i128 % step as i128 != 0)
        .count();
    let (mut values, duplicates) = average_on_grid(rows, start, step, len);
    let filled = interpolate(&mut values);
    if unsorted {
        notes.push("rows were not in time order: sorted".into());
    }
    if duplicates > 0 {
        notes.push(format!("{duplicates} duplicate time(s): values averaged"));
    }
    if off_grid > 0 {
        notes.push(format!(
            "{off_grid} time(s) off the {step}-step grid moved to the nearest step"
        ));
    }
    if filled > 0 {
        notes.push(format!(
            "{filled} missing step(s) (gaps or NULL values) filled by linear interpolation"
        ));
    }
    Ok(Regularized {
        start,
        step,
        values,
        notes,
    })
}

/// The finite values of `rows` on the grid of `len` steps of `step` from `start`, each at its
/// nearest step, averaged where several land on one step (NaN where none does; rows outside
/// the grid are ignored); also returns how many values were averaged away.
fn average_on_grid(
    rows: &[(i64, Option<f64>)],
    start: i64,
    step: i64,
    len: usize,
) -> (Vec<f64>, u32) {
    let step = step.max(1) as i128;
    let mut sum = vec![0.0; len];
    let mut count = vec![0u32; len];
    for &(t, v) in rows {
        let slot = ((t - start) as i128 + step / 2).div_euclid(step);
        if let (Ok(slot), Some(v)) = (usize::try_from(slot), v.filter(|v| v.is_finite()))
            && slot < len
        {
            sum[slot] += v;
            count[slot] += 1;
        }
    }
    let duplicates = count.iter().map(|c| c.saturating_sub(1)).sum();
    let values = sum
        .iter()
        .zip(&count)
        .map(|(s, &c)| if c > 0 { s / c as f64 } else { f64::NAN })
        .collect();
    (values, duplicates)
}

/// Another column of the same rows on a series' grid (`len` steps of `step` from `start`):
/// values landing on one step are averaged, gaps between values are interpolated linearly,
/// steps before the first / after the last value take the nearest one, rows off the grid's
/// range are ignored; a column without any value is NaN throughout.
pub fn on_grid(rows: &[(i64, Option<f64>)], start: i64, step: i64, len: usize) -> Vec<f64> {
    let (mut values, _) = average_on_grid(rows, start, step, len);
    let (Some(first), Some(last)) = (
        values.iter().position(|v| !v.is_nan()),
        values.iter().rposition(|v| !v.is_nan()),
    ) else {
        return values;
    };
    let (a, b) = (values[first], values[last]);
    values[..first].fill(a);
    values[last + 1..].fill(b);
    interpolate(&mut values[first..=last]);
    values
}

/// Fill NaN runs between finite values linearly; returns how many were filled. The first
/// and last values are finite by construction.
fn interpolate(v: &mut [f64]) -> usize {
    let mut filled = 0;
    let mut i = 0;
    while i < v.len() {
        if v[i].is_nan() {
            let a = i - 1;
            let b = (i..v.len())
                .find(|&k| !v[k].is_nan())
                .unwrap_or(v.len() - 1);
            for k in i..b {
                let w = (k - a) as f64 / (b - a) as f64;
                v[k] = v[a] + w * (v[b] - v[a]);
                filled += 1;
            }
            i = b;
        }
        i += 1;
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsorted_duplicated_gapped_rows_become_a_regular_series() {
        let rows = vec![
            (30, Some(3.0)),
            (0, None),
            (10, Some(1.0)),
            (20, Some(2.0)),
            (20, Some(4.0)),
            (60, Some(6.0)),
            (70, None),
        ];
        let r = regularize(&rows, None).expect("regular");
        assert_eq!(r.start, 10);
        assert_eq!(r.step, 10);
        assert_eq!(r.values, vec![1.0, 3.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(r.notes.len(), 4, "{:?}", r.notes);
    }

    #[test]
    fn other_columns_follow_the_series_grid() {
        let rows = vec![
            (10, Some(1.0)),
            (30, Some(3.0)),
            (30, Some(5.0)),
            (70, None),
        ];
        assert_eq!(on_grid(&rows, 0, 10, 6), vec![1.0, 1.0, 2.5, 4.0, 4.0, 4.0]);
        assert!(on_grid(&[(0, None)], 0, 10, 2).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn all_null_series_and_absurd_grids_are_errors() {
        assert!(regularize(&[(0, None), (1, None)], None).is_err());
        assert!(
            regularize(
                &[(0, Some(1.0)), (1, Some(1.0)), (i64::MAX / 2, Some(2.0))],
                None
            )
            .is_err()
        );
    }
}
