//! Seasonality: autocorrelation, the M4 seasonality test and classical decomposition (the
//! seasonal adjustment of the M4 benchmarks: Naive2, Theta): multiplicative, or additive for
//! a series with zeros or negative values, which a ratio cannot adjust (statsforecast's Theta
//! does the same).

/// Autocorrelation of `y` at lags `0..=max_lag` (the usual biased estimator).
pub fn acf(y: &[f64], max_lag: usize) -> Vec<f64> {
    let n = y.len();
    let mean = y.iter().sum::<f64>() / n.max(1) as f64;
    let denom: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    (0..=max_lag.min(n.saturating_sub(1)))
        .map(|k| {
            if denom <= 0.0 {
                return if k == 0 { 1.0 } else { 0.0 };
            }
            let num: f64 = (k..n).map(|t| (y[t] - mean) * (y[t - k] - mean)).sum();
            num / denom
        })
        .collect()
}

/// The M4 benchmarks' 90 % test: is the autocorrelation at lag `m` significant, given the
/// ones below it? Series shorter than `3 m` are not called seasonal.
pub fn is_seasonal(y: &[f64], m: usize) -> bool {
    if m < 2 || y.len() < 3 * m {
        return false;
    }
    let r = acf(y, m);
    let sum_sq: f64 = r[1..m].iter().map(|v| v * v).sum();
    let limit = 1.645 * ((1.0 + 2.0 * sum_sq) / y.len() as f64).sqrt();
    r[m].abs() > limit
}

/// Seasonal indices of a classical multiplicative decomposition with period `m`
/// (centred moving average, then the mean ratio per season position, normalised to mean 1).
/// `index[i]` belongs to position `i % m` counted from the first observation. `None` when the
/// series has a non-positive value or is too short.
pub fn multiplicative_indices(y: &[f64], m: usize) -> Option<Vec<f64>> {
    if y.iter().any(|v| *v <= 0.0) {
        return None;
    }
    let trend = centred_trend(y, m)?;
    let mut sums = vec![0.0; m];
    let mut counts = vec![0usize; m];
    for (t, (v, tr)) in y.iter().zip(&trend).enumerate() {
        if tr.is_finite() && *tr > 0.0 {
            sums[t % m] += v / tr;
            counts[t % m] += 1;
        }
    }
    let mut idx = position_means(&sums, &counts)?;
    let mean = idx.iter().sum::<f64>() / m as f64;
    if mean.is_nan() || mean <= 0.0 {
        return None;
    }
    idx.iter_mut().for_each(|v| *v /= mean);
    Some(idx)
}

/// Seasonal terms of a classical additive decomposition with period `m` (centred moving
/// average, then the mean difference per season position, shifted to mean 0), positioned as
/// in [`multiplicative_indices`]. `None` when the series is too short.
pub fn additive_indices(y: &[f64], m: usize) -> Option<Vec<f64>> {
    let trend = centred_trend(y, m)?;
    let mut sums = vec![0.0; m];
    let mut counts = vec![0usize; m];
    for (t, (v, tr)) in y.iter().zip(&trend).enumerate() {
        if tr.is_finite() {
            sums[t % m] += v - tr;
            counts[t % m] += 1;
        }
    }
    let mut idx = position_means(&sums, &counts)?;
    let mean = idx.iter().sum::<f64>() / m as f64;
    idx.iter_mut().for_each(|v| *v -= mean);
    Some(idx)
}

/// Mean per season position; `None` when a position has no value.
fn position_means(sums: &[f64], counts: &[usize]) -> Option<Vec<f64>> {
    if counts.contains(&0) {
        return None;
    }
    Some(
        sums.iter()
            .zip(counts)
            .map(|(s, &c)| s / c as f64)
            .collect(),
    )
}

/// The centred moving average of order `m` (2×m when `m` is even), NaN where the window does
/// not fit; `None` when the series is shorter than two seasons or has a NaN.
fn centred_trend(y: &[f64], m: usize) -> Option<Vec<f64>> {
    let n = y.len();
    if m < 2 || n < 2 * m || y.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut trend = vec![f64::NAN; n];
    let half = m / 2;
    for (t, slot) in trend.iter_mut().enumerate().take(n - half).skip(half) {
        *slot = if m.is_multiple_of(2) {
            let s: f64 = y[t - half..t + half].iter().sum::<f64>()
                + y[t - half + 1..=t + half].iter().sum::<f64>();
            s / (2 * m) as f64
        } else {
            y[t - half..=t + half].iter().sum::<f64>() / m as f64
        };
    }
    Some(trend)
}

/// Season length to use when none is given: the candidate (for the data's frequency) whose
/// autocorrelation passes the 90 % test most strongly, or 1.
pub fn detect_season_length(y: &[f64], candidates: &[usize]) -> usize {
    candidates
        .iter()
        .copied()
        .filter(|&m| is_seasonal(y, m))
        .map(|m| (m, acf(y, m)[m]))
        .fold(None, |best: Option<(usize, f64)>, (m, r)| match best {
            Some((_, br)) if br >= r => best,
            _ => Some((m, r)),
        })
        .map(|(m, _)| m)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, m: usize) -> Vec<f64> {
        (0..n)
            .map(|t| 10.0 + 3.0 * (2.0 * std::f64::consts::PI * (t % m) as f64 / m as f64).sin())
            .collect()
    }

    #[test]
    fn a_sine_of_period_24_is_seasonal_at_24() {
        let y = wave(24 * 10, 24);
        assert!(is_seasonal(&y, 24));
        assert_eq!(detect_season_length(&y, &[7, 12, 24]), 24);
        let idx = multiplicative_indices(&y, 24).expect("indices");
        assert!((idx.iter().sum::<f64>() / 24.0 - 1.0).abs() < 1e-9);
        assert!(idx[6] > 1.2 && idx[18] < 0.8, "{idx:?}");
    }

    #[test]
    fn white_noise_is_not_seasonal() {
        // A fixed pseudo-random sequence (xorshift64).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let y: Vec<f64> = (0..400)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                10.0 + (state >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect();
        assert_eq!(detect_season_length(&y, &[12, 24]), 1);
    }
}
