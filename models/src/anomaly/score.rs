//! Residuals → anomaly scores: the robust scale, the point / shift / variance tests and their
//! p-values (see the module docs of `anomaly` for the method).

use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::function::erf::erfc;

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

/// Two-sided Gaussian tail probability of `|z|`: `erfc(|z| / √2)`.
fn gaussian_tail(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// The last values of a stream kept sorted (insert and evict by binary search), so medians,
/// the MAD and tail counts cost O(log n) or a half walk instead of a selection over a copy of
/// the window at every point.
#[derive(Debug, Default)]
pub(super) struct SortedWindow {
    sorted: Vec<f64>,
}

impl SortedWindow {
    fn position(&self, v: f64) -> usize {
        self.sorted.partition_point(|x| x.total_cmp(&v).is_lt())
    }

    pub(super) fn insert(&mut self, v: f64) {
        let i = self.position(v);
        self.sorted.insert(i, v);
    }

    /// Remove one value equal to `v` (it was inserted before).
    pub(super) fn remove(&mut self, v: f64) {
        let i = self.position(v);
        if self.sorted.get(i).is_some_and(|x| x.total_cmp(&v).is_eq()) {
            self.sorted.remove(i);
        }
    }

    fn len(&self) -> usize {
        self.sorted.len()
    }

    fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The median (the mean of the middle two for an even count; NaN when empty).
    pub(super) fn median(&self) -> f64 {
        let n = self.sorted.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => self.sorted[n / 2],
            _ => (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2.0,
        }
    }

    /// The median of `|x − m|`: the distances below and above `m` are two ascending runs,
    /// and their `k`-th smallest is found by bisecting how many come from each.
    fn median_distance(&self, m: f64) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return f64::NAN;
        }
        let split = self.sorted.partition_point(|&x| x < m);
        let (na, nb) = (split, n - split);
        let a = |i: usize| (self.sorted[split - 1 - i] - m).abs();
        let b = |j: usize| (self.sorted[split + j] - m).abs();
        // The (k + 1)-th smallest distance (k 0-based): take i from below and k + 1 − i from
        // above, with the smallest i whose next one below is not smaller than the last above.
        let kth = |k: usize| {
            let (mut lo, mut hi) = ((k + 1).saturating_sub(nb), (k + 1).min(na));
            while lo < hi {
                let i = (lo + hi) / 2;
                let j = k + 1 - i;
                if i < na && j > 0 && b(j - 1) > a(i) {
                    lo = i + 1;
                } else {
                    hi = i;
                }
            }
            let j = k + 1 - lo;
            let from_a = if lo > 0 { a(lo - 1) } else { f64::NEG_INFINITY };
            let from_b = if j > 0 { b(j - 1) } else { f64::NEG_INFINITY };
            from_a.max(from_b)
        };
        if n % 2 == 1 {
            kth(n / 2)
        } else {
            (kth(n / 2 - 1) + kth(n / 2)) / 2.0
        }
    }

    /// Values ≥ `v`.
    fn count_at_least(&self, v: f64) -> usize {
        self.sorted.len() - self.sorted.partition_point(|&x| x < v)
    }

    /// The largest and second largest values (0 where missing; statistics are ≥ 0).
    fn top_two(&self) -> (f64, f64) {
        let n = self.sorted.len();
        let at = |i: Option<usize>| i.and_then(|i| self.sorted.get(i)).copied().unwrap_or(0.0);
        (at(n.checked_sub(1)).max(0.0), at(n.checked_sub(2)).max(0.0))
    }
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
    /// The last `history` residuals, sorted.
    resid_window: SortedWindow,
    /// The last `history` statistics before the latest one, sorted.
    stat_window: SortedWindow,
    /// The latest statistic, which joins `stat_window` at the next push.
    pending: Option<f64>,
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
        self.resid_window.insert(r);
        if k >= history {
            self.resid_window.remove(self.resid[k - history]);
        }
        if let Some(prev) = self.pending.take() {
            // `prev` is stats[j]; the window keeps stats[j + 1 − history ..= j].
            let j = self.stats.len() - 1;
            self.stat_window.insert(prev);
            if j >= history {
                self.stat_window.remove(self.stats[j - history]);
            }
        }
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
        let stat = z.abs().max(shift).max(var);
        self.stats.push(stat);
        self.pending = Some(stat);
        Some(self.scale)
    }

    /// 1.4826 × the MAD of the last `history` residuals; a flat history has MAD 0: then the
    /// mean absolute deviation, then a tiny fraction of the level so a constant series flags
    /// any change.
    fn robust_scale(&mut self, history: usize, expected: f64) -> f64 {
        // The sorted window holds exactly the last `history` residuals before this point.
        self.scale_n = self.resid_window.len();
        let m = self.resid_window.median();
        let mad = 1.4826 * self.resid_window.median_distance(m);
        if mad > 0.0 {
            return mad;
        }
        let k = self.resid.len();
        let past = &self.resid[k.saturating_sub(history)..k];
        let mean_abs = past.iter().map(|x| (x - m).abs()).sum::<f64>() / past.len() as f64;
        if mean_abs > 0.0 {
            1.2533 * mean_abs
        } else {
            1e-9 * expected.abs().max(1e-9)
        }
    }

    /// `1 − p` for the statistic of the latest point [`Scorer::push`] scored: p is the larger
    /// of a Student-t p-value (tripled for the three tests) and the empirical one among the
    /// statistics of the last `history` points.
    pub(super) fn latest_score(&self) -> f64 {
        let Some(&stat) = self.stats.last() else {
            return 0.0;
        };
        // The scale is an estimate: the point test's z is Student-t distributed with the MAD's
        // effective degrees of freedom (its efficiency is 0.37 of the standard deviation's),
        // so a scale from few residuals needs a larger z (about 13 instead of 3.6 at p =
        // 0.001 / 3 with 8 residuals), and one from 1 000 is nearly Gaussian.
        let dof = MAD_EFFICIENCY * self.scale_n.saturating_sub(1) as f64;
        let tail = student_tail(stat, dof);
        let p_gauss = (3.0 * tail).min(1.0);
        let past = &self.stat_window;
        // The single largest past statistic is left out of the count, so one huge spike does
        // not hide every smaller anomaly for a whole history.
        let (top, second) = past.top_two();
        let exceed = past.count_at_least(stat) - usize::from(top >= stat && !past.is_empty());
        let p_emp = if exceed > 0 {
            (exceed + 1) as f64 / past.len() as f64
        } else {
            let ratio = (tail / student_tail(second, dof).max(f64::MIN_POSITIVE)).min(1.0);
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

    #[test]
    fn a_sorted_window_gives_the_selection_median_and_mad() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut w = SortedWindow::default();
        let mut all = Vec::new();
        for step in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = ((state >> 11) % 1000) as f64 / 10.0 - 50.0;
            w.insert(v);
            all.push(v);
            if step % 3 == 2 {
                let gone = all.remove(0);
                w.remove(gone);
            }
            let mut copy = all.clone();
            let m = median(&mut copy);
            assert_eq!(w.median(), m);
            let mut d: Vec<f64> = all.iter().map(|x| (x - m).abs()).collect();
            assert_eq!(w.median_distance(m), median(&mut d), "step {step}");
        }
    }
}
