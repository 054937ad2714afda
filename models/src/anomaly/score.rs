//! Residuals → anomaly scores: the robust scale, the point / shift / variance tests and their
//! p-values (see the module docs of `anomaly` for the method).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Points of history before a point can be scored.
pub const MIN_HISTORY: usize = 8;

/// Points the shift test sums over.
const SHIFT_SPAN: usize = 6;
/// Largest |z| one point adds to the shift test.
const SHIFT_CLIP: f64 = 3.0;
/// Points the variance test sums over.
const VAR_SPAN: usize = 12;
/// Mean and variance of `min(z², 9)` for a standard normal `z`.
const CLIPPED_SQUARE_MEAN: f64 = 0.995_008;
const CLIPPED_SQUARE_VAR: f64 = 1.901_455;

/// The robust scale is recomputed every this many points (it moves slowly).
const SCALE_EVERY: usize = 8;

pub(super) fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
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

/// Asymptotic efficiency of the MAD relative to the standard deviation for normal data.
const MAD_EFFICIENCY: f64 = 0.37;

/// Two-sided Student-t tail probability of `|z|` with `dof` degrees of freedom (Gaussian from
/// 1 000 on, and below 1 taken as 1).
fn student_tail(z: f64, dof: f64) -> f64 {
    if dof >= 1000.0 {
        return gaussian_tail(z);
    }
    match StudentsT::new(0.0, 1.0, dof.max(1.0)) {
        Ok(t) => 2.0 * t.sf(z.abs()),
        Err(_) => gaussian_tail(z),
    }
}

/// Two-sided Gaussian tail probability of `|z|`.
pub(super) fn gaussian_tail(z: f64) -> f64 {
    2.0 * upper_normal(z.abs())
}

/// `1 − Φ(x)` for x ≥ 0.
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

/// The residuals of one way of predicting a series, scored causally: each residual against
/// the scale and the statistics of the residuals before it.
#[derive(Debug, Default)]
pub(super) struct Scorer {
    resid: Vec<f64>,
    zs: Vec<f64>,
    stats: Vec<f64>,
    scale: f64,
    /// Residuals the scale was estimated from.
    scale_n: usize,
    buf: Vec<f64>,
}

impl Scorer {
    pub(super) fn new() -> Self {
        Self {
            scale: f64::NAN,
            ..Self::default()
        }
    }

    /// Residuals seen so far.
    pub(super) fn len(&self) -> usize {
        self.resid.len()
    }

    /// The current robust scale (NaN before [`MIN_HISTORY`] residuals).
    pub(super) fn scale(&self) -> f64 {
        self.scale
    }

    /// Add the next residual `r` of a point whose expected value is `expected`; the scale it
    /// was compared with, or `None` while there are fewer than [`MIN_HISTORY`] residuals
    /// before it. Its score, which costs a pass over the history, is left to
    /// [`Scorer::latest_score`] (only the stream a point is judged by needs it).
    pub(super) fn push(&mut self, r: f64, expected: f64, history: usize) -> Option<f64> {
        let k = self.resid.len();
        if k >= MIN_HISTORY && (k.is_multiple_of(SCALE_EVERY) || !self.scale.is_finite()) {
            self.scale = self.robust_scale(history, expected);
        }
        self.resid.push(r);
        if k < MIN_HISTORY || !self.scale.is_finite() {
            self.zs.push(0.0);
            return None;
        }
        let z = r / self.scale;
        self.zs.push(z);
        let span = SHIFT_SPAN.min(self.zs.len());
        // Each z is clipped to ±3 here, so one spike cannot make its neighbours a "shift".
        let shift = self.zs[self.zs.len() - span..]
            .iter()
            .map(|z| z.clamp(-SHIFT_CLIP, SHIFT_CLIP))
            .sum::<f64>()
            .abs()
            / (span as f64).sqrt();
        // Variance test: the clipped squares of the last points against their mean under the
        // normal model (one-sided: a burst of larger variance), standardised.
        let vspan = VAR_SPAN.min(self.zs.len());
        let squares = self.zs[self.zs.len() - vspan..]
            .iter()
            .map(|z| (z * z).min(SHIFT_CLIP * SHIFT_CLIP))
            .sum::<f64>();
        let var = ((squares - vspan as f64 * CLIPPED_SQUARE_MEAN)
            / (vspan as f64 * CLIPPED_SQUARE_VAR).sqrt())
        .max(0.0);
        self.stats.push(z.abs().max(shift).max(var));
        Some(self.scale)
    }

    /// 1.4826 × the MAD of the last `history` residuals; a flat history has MAD 0: then the
    /// mean absolute deviation, then a tiny fraction of the level so a constant series flags
    /// any change.
    fn robust_scale(&mut self, history: usize, expected: f64) -> f64 {
        let k = self.resid.len();
        let past = &self.resid[k.saturating_sub(history)..k];
        self.scale_n = past.len();
        self.buf.clear();
        self.buf.extend_from_slice(past);
        let m = median(&mut self.buf);
        self.buf.iter_mut().for_each(|x| *x = (*x - m).abs());
        let mad = 1.4826 * median(&mut self.buf);
        let mean_abs = past.iter().map(|x| (x - m).abs()).sum::<f64>() / past.len() as f64;
        if mad > 0.0 {
            mad
        } else if mean_abs > 0.0 {
            1.2533 * mean_abs
        } else {
            1e-9 * expected.abs().max(1e-9)
        }
    }

    /// `1 − p` for the statistic of the latest point [`Scorer::push`] scored: p is the larger
    /// of a Student-t p-value (tripled for the three tests) and the empirical one among the
    /// statistics of the last `history` points.
    pub(super) fn latest_score(&self, history: usize) -> f64 {
        let Some((&stat, before)) = self.stats.split_last() else {
            return 0.0;
        };
        // The scale is an estimate: the point test's z is Student-t distributed with the MAD's
        // effective degrees of freedom (its efficiency is 0.37 of the standard deviation's),
        // so a scale from few residuals needs a larger z (about 13 instead of 3.6 at p =
        // 0.001 / 3 with 8 residuals), and one from 1 000 is nearly Gaussian.
        let dof = MAD_EFFICIENCY * self.scale_n.saturating_sub(1) as f64;
        let p_gauss = (3.0 * student_tail(stat, dof)).min(1.0);
        let past = &before[before.len().saturating_sub(history)..];
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
            let ratio = (student_tail(stat, dof)
                / student_tail(second, dof).max(f64::MIN_POSITIVE))
            .min(1.0);
            ratio / (past.len() + 1) as f64
        };
        (1.0 - p_gauss.max(p_emp)).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_match_the_normal_distribution() {
        assert!((gaussian_tail(1.959964) - 0.05).abs() < 1e-6);
        assert!((gaussian_tail(0.0) - 1.0).abs() < 1e-6);
        assert!(gaussian_tail(8.0) < 1e-14);
        // t with 10 degrees of freedom: 2.228 is its 97.5 % quantile.
        assert!((student_tail(2.228, 10.0) - 0.05).abs() < 1e-3);
        assert!((student_tail(3.0, 5000.0) - gaussian_tail(3.0)).abs() < 1e-12);
    }
}
