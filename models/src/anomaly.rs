//! Anomaly scores of one series, computed causally: the score of a point uses only the points
//! before it, so a score never changes when later data arrives (alerting on a live metric
//! sees the same scores as a replay).
//!
//! For each point `t`:
//! * **expected**: the median of the previous [`AnomalySpec::level_window`] values (a robust
//!   local level that follows level changes after half a window);
//! * **residual z**: `(y[t] − expected) / scale`, with `scale` = 1.4826 × the MAD of the
//!   previous [`AnomalySpec::history`] residuals (a robust standard deviation);
//! * two tests on it: the **point** test `|z|` (spikes, dips) and the **shift** test
//!   `|Σ clip(z, ±3) over the last 6 points| / √6` (level shifts and bursts of larger
//!   variance that no single point shows; the clip keeps one spike from flagging its
//!   neighbours);
//! * a p-value for the larger statistic: the larger of a Gaussian tail (doubled for the two
//!   tests) and the empirical tail among the statistics of the last `history` points
//!   (a conformal p-value, which keeps heavy-tailed metrics from alerting all the time; the
//!   single largest past statistic is left out, so one huge spike does not hide the next,
//!   smaller anomaly); past the largest statistic counted, the empirical tail continues with
//!   the Gaussian one's shape;
//! * `score = 1 − p` in [0, 1];
//! * `is_anomaly` marks where an alert should fire: the score reaches the sensitivity and no
//!   point of the previous `level_window` points did (the onset of an anomalous episode; the
//!   points after it within the episode keep their high scores but do not alert again —
//!   `score >= sensitivity` selects every anomalous point).
//!
//! `lower` / `upper` are `expected ∓ z* · scale`, where `z*` is the Gaussian point-test bound at
//! the sensitivity: the band a single value must leave to be an anomaly by itself.
//! The first points (fewer than [`MIN_HISTORY`] before them) get score 0: there is nothing to
//! compare them with.

use crate::forecast::normal_quantile;

/// Points of history before a point can be scored.
pub const MIN_HISTORY: usize = 8;

/// How anomalies are scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalySpec {
    /// Score at or above which a point is an anomaly, in (0, 1).
    pub sensitivity: f64,
    /// Values whose median is the expected value.
    pub level_window: usize,
    /// Residuals (and statistics) the scale and the empirical tail come from.
    pub history: usize,
}

impl Default for AnomalySpec {
    fn default() -> Self {
        Self {
            sensitivity: 0.999,
            level_window: 12,
            history: 1000,
        }
    }
}

/// Scores of every point of a series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyScores {
    /// Expected value.
    pub expected: Vec<f64>,
    /// Lower bound of normal values.
    pub lower: Vec<f64>,
    /// Upper bound of normal values.
    pub upper: Vec<f64>,
    /// Anomaly score in [0, 1].
    pub score: Vec<f64>,
    /// Alert onsets: `score >= sensitivity` after `level_window` points below it.
    pub is_anomaly: Vec<bool>,
}

fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + m) / 2.0
    }
}

/// Two-sided Gaussian tail probability of `|z|`.
fn gaussian_tail(z: f64) -> f64 {
    // erfc via the complementary normal CDF: 2 (1 − Φ(|z|)); Φ from erf's series would lose
    // precision in the tail, so use the Abramowitz–Stegun 7.1.26-free continued form below.
    2.0 * upper_normal(z.abs())
}

/// `1 − Φ(x)` for x ≥ 0 (W. J. Cody's rational approximations via erfc; |rel. error| < 1e-7).
fn upper_normal(x: f64) -> f64 {
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, |rel. error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Points the shift test sums over.
const SHIFT_SPAN: usize = 6;
/// Largest |z| one point adds to the shift test.
const SHIFT_CLIP: f64 = 3.0;
/// The robust scale is recomputed every this many points (it moves slowly).
const SCALE_EVERY: usize = 8;

/// Score a series (values in time order; `NaN` = missing, scored `NaN` and skipped).
pub fn detect(y: &[f64], spec: &AnomalySpec) -> AnomalyScores {
    let n = y.len();
    let mut out = AnomalyScores {
        expected: vec![f64::NAN; n],
        lower: vec![f64::NAN; n],
        upper: vec![f64::NAN; n],
        score: vec![f64::NAN; n],
        is_anomaly: vec![false; n],
    };
    let z_band = normal_quantile(1.0 - (1.0 - spec.sensitivity) / 2.0);
    // Observed values and their positions (missing values are skipped, not imputed).
    let seen: Vec<(usize, f64)> = y
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i, v))
        .collect();
    let mut resid: Vec<f64> = Vec::with_capacity(seen.len());
    let mut zs: Vec<f64> = Vec::with_capacity(seen.len());
    let mut stats: Vec<f64> = Vec::with_capacity(seen.len());
    let mut scale = f64::NAN;
    let mut buf = Vec::with_capacity(spec.history.max(spec.level_window));
    let mut last_high: Option<usize> = None;
    for (k, &(i, v)) in seen.iter().enumerate() {
        let lw = spec.level_window.max(1);
        let expected = if k == 0 {
            v
        } else {
            buf.clear();
            buf.extend(seen[k.saturating_sub(lw)..k].iter().map(|p| p.1));
            median(&mut buf)
        };
        let r = v - expected;
        if k >= MIN_HISTORY && (k % SCALE_EVERY == 0 || !scale.is_finite()) {
            let past = &resid[k.saturating_sub(spec.history)..k];
            buf.clear();
            buf.extend_from_slice(past);
            let m = median(&mut buf);
            buf.iter_mut().for_each(|x| *x = (*x - m).abs());
            let mad = 1.4826 * median(&mut buf);
            let mean_abs = past.iter().map(|x| (x - m).abs()).sum::<f64>() / past.len() as f64;
            // A flat history has MAD 0: fall back to the mean absolute deviation, then to a
            // tiny fraction of the level so a constant series flags any change.
            scale = if mad > 0.0 {
                mad
            } else if mean_abs > 0.0 {
                1.2533 * mean_abs
            } else {
                1e-9 * expected.abs().max(1e-9)
            };
        }
        resid.push(r);
        if k < MIN_HISTORY || !scale.is_finite() {
            zs.push(0.0);
            out.expected[i] = expected;
            out.score[i] = 0.0;
            continue;
        }
        let z = r / scale;
        zs.push(z);
        let span = SHIFT_SPAN.min(zs.len());
        // Each z is clipped to ±3 here, so one spike cannot make its neighbours a "shift".
        let shift = zs[zs.len() - span..]
            .iter()
            .map(|z| z.clamp(-SHIFT_CLIP, SHIFT_CLIP))
            .sum::<f64>()
            .abs()
            / (span as f64).sqrt();
        let stat = z.abs().max(shift);
        // Gaussian p-value (two tests: doubled), then the empirical one among past statistics.
        let p_gauss = (2.0 * gaussian_tail(stat)).min(1.0);
        let past = &stats[stats.len().saturating_sub(spec.history)..];
        // The single largest past statistic is left out of the count, so one huge spike does
        // not hide every smaller anomaly for a whole history.
        let (top, second) =
            past.iter().fold(
                (0.0f64, 0.0f64),
                |(a, b), &s| {
                    if s > a { (s, a) } else { (a, b.max(s)) }
                },
            );
        let exceed = past.iter().filter(|&&s| s >= stat).count()
            - usize::from(top >= stat && !past.is_empty());
        let p_emp = if exceed > 0 {
            (exceed + 1) as f64 / past.len() as f64
        } else {
            let max = second;
            let ratio = (gaussian_tail(stat) / gaussian_tail(max).max(f64::MIN_POSITIVE)).min(1.0);
            ratio / (past.len() + 1) as f64
        };
        let score = (1.0 - p_gauss.max(p_emp)).clamp(0.0, 1.0);
        stats.push(stat);
        out.expected[i] = expected;
        out.lower[i] = expected - z_band * scale;
        out.upper[i] = expected + z_band * scale;
        out.score[i] = score;
        if score >= spec.sensitivity {
            out.is_anomaly[i] = last_high.is_none_or(|l| k - l > spec.level_window);
            last_high = Some(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: f64) -> Vec<f64> {
        (0..n)
            .map(|t| ((t as f64 * 12.9898 + seed).sin() * 43_758.545).fract() - 0.5)
            .collect()
    }

    #[test]
    fn tails_match_the_normal_distribution() {
        assert!((gaussian_tail(1.959964) - 0.05).abs() < 1e-6);
        assert!((gaussian_tail(0.0) - 1.0).abs() < 1e-6);
        assert!(gaussian_tail(8.0) < 1e-14);
    }

    #[test]
    fn a_spike_and_a_level_shift_are_found_and_noise_is_quiet() {
        let mut y: Vec<f64> = noise(2000, 1.0).iter().map(|e| 100.0 + e).collect();
        y[1200] += 15.0;
        for v in &mut y[1600..] {
            *v += 3.0;
        }
        let s = detect(&y, &AnomalySpec::default());
        assert!(s.is_anomaly[1200], "spike: {}", s.score[1200]);
        assert!(
            s.is_anomaly[1600..1610].iter().any(|&a| a),
            "level shift: {:?}",
            &s.score[1600..1610]
        );
        assert_eq!(
            s.is_anomaly[1600..1700].iter().filter(|&&a| a).count(),
            1,
            "one alert for one shift"
        );
        let false_alarms = s.is_anomaly[..1190].iter().filter(|&&a| a).count();
        assert!(false_alarms <= 3, "{false_alarms} alarms on noise");
        assert!(s.score.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(s.lower[1200] <= s.expected[1200] && s.expected[1200] <= s.upper[1200]);
    }

    #[test]
    fn missing_values_are_skipped_and_constant_series_flag_any_change() {
        let mut y = vec![5.0; 100];
        y[50] = f64::NAN;
        y[80] = 6.0;
        let s = detect(&y, &AnomalySpec::default());
        assert!(s.score[50].is_nan());
        assert!(s.is_anomaly[80]);
        assert_eq!(s.is_anomaly.iter().filter(|&&a| a).count(), 1);
    }
}
