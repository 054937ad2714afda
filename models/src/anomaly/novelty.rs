//! Novelty of a series' latest stretch: how far its last `window` values are from the most
//! similar earlier stretch (the *left matrix profile*, a discord score), relative to the most
//! novel stretch seen before.
//!
//! A metric that jumps between two levels all day, or repeats the same burst every night,
//! gives large residuals at every jump; the residual tests alone alert on each. Its stretches
//! have close neighbours earlier in the series, though, so their distance to the nearest one
//! is small: a familiar pattern, not an anomaly. A stretch unlike anything before has a large
//! distance. [`relative_novelty`] divides each distance by the largest one before it, so above
//! 1 is the most novel stretch so far and values near 0 are patterns seen many times.
//!
//! Distances are plain Euclidean on the values (not z-normalised: a stretch at a level never
//! seen before is novel even when its shape is familiar), so the ratio is free of the series'
//! units. Everything is causal: a point's novelty reads only the values up to it.
//!
//! Written here rather than taken from a crate: the matrix-profile crates compute the full
//! (two-sided, z-normalised) profile of a whole series; this needs the left profile only,
//! un-normalised, over a bounded history, which is one short recurrence.

/// Earlier stretches a stretch is compared with (the most recent ones): bounds the cost at
/// `NOVELTY_HISTORY` distance updates per point.
pub const NOVELTY_HISTORY: usize = 10_000;

/// Steps between exact recomputations of the running distances (the recurrence below adds and
/// subtracts squares, so rounding errors would otherwise accumulate over a long series).
const RESYNC_EVERY: usize = 256;

/// Squared distances up to this fraction of the stretch's squared norm are rounding errors of
/// the recurrence (it adds and subtracts squares of the values), so exact repeats of a
/// pattern read as distance 0 rather than as noise whose records would look novel.
const ROUNDING: f64 = 1e-9;

/// Squared distance between the stretches of `w` values starting at `a` and `b`.
fn distance2(y: &[f64], a: usize, b: usize, w: usize) -> f64 {
    y[a..a + w]
        .iter()
        .zip(&y[b..b + w])
        .map(|(p, q)| (p - q) * (p - q))
        .sum()
}

/// The distance of a squared distance `d2` from `stretch` to another: 0 below the
/// recurrence's rounding relative to the stretch's own size (a repeat).
fn distance(d2: f64, stretch: &[f64]) -> f64 {
    let size2: f64 = stretch.iter().map(|v| v * v).sum();
    if d2 <= ROUNDING * size2 {
        0.0
    } else {
        d2.sqrt()
    }
}

/// The left matrix profile of `y` (finite values, in order) for stretches of `window` values:
/// at index `t`, the distance from `y[t + 1 − window ..= t]` to the nearest earlier stretch that
/// does not overlap it, among the last [`NOVELTY_HISTORY`]; NaN where there is none yet.
pub fn left_profile(y: &[f64], window: usize) -> Vec<f64> {
    let n = y.len();
    let mut out = vec![f64::NAN; n];
    if window == 0 || n < 2 * window {
        return out;
    }
    let stretches = n - window + 1;
    // d2[j]: squared distance between stretch i (the current one) and stretch j.
    let mut d2 = vec![0.0f64; stretches];
    for i in window..stretches {
        // Candidates j in lo..hi: ended before stretch i starts, within the history.
        let hi = i + 1 - window;
        let lo = hi.saturating_sub(NOVELTY_HISTORY);
        if i == window || i % RESYNC_EVERY == 0 {
            for (j, d) in d2.iter_mut().enumerate().take(hi).skip(lo) {
                *d = distance2(y, i, j, window);
            }
        } else {
            // Stretch pairs (i, j) and (i − 1, j − 1) share window − 1 value pairs:
            // d2(i, j) = d2(i − 1, j − 1) − (y[i−1] − y[j−1])² + (y[i+w−1] − y[j+w−1])².
            // Descending j, so d2[j − 1] still holds the previous step's value; the newest
            // candidate (j = hi − 1) was one step ago at (i − 1, hi − 2): in range, so fine.
            let (out_v, in_v) = (y[i - 1], y[i + window - 1]);
            for j in (lo.max(1)..hi).rev() {
                let gone = out_v - y[j - 1];
                let new = in_v - y[j + window - 1];
                d2[j] = d2[j - 1] - gone * gone + new * new;
            }
            if lo == 0 {
                d2[0] = distance2(y, i, 0, window);
            }
        }
        let nearest = d2[lo..hi].iter().copied().fold(f64::INFINITY, f64::min);
        out[i + window - 1] = distance(nearest, &y[i..i + window]);
    }
    out
}

/// Each profile value divided by the largest one before it, from index `warm_up` on (the
/// first stretches have few neighbours, so their large distances say little and are not
/// counted as the largest); NaN before `warm_up`, at the first value after it and where the
/// profile is NaN. While every earlier distance is 0 (exact repeats), a positive distance is
/// infinitely novel; a distance equal to the largest up to rounding is 1.
pub fn relative_novelty(profile: &[f64], warm_up: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; profile.len()];
    // None until the first distance after the warm-up, which has nothing to compare with.
    let mut largest: Option<f64> = None;
    for (t, &d) in profile.iter().enumerate().skip(warm_up) {
        if !d.is_finite() {
            continue;
        }
        out[t] = match largest {
            None => f64::NAN,
            // Equal up to rounding is not more novel.
            Some(l) if (d - l).abs() <= ROUNDING * l => 1.0,
            Some(l) if l > 0.0 => d / l,
            // Every earlier distance was 0 (exact repeats): any distance is more novel.
            Some(_) if d > 0.0 => f64::INFINITY,
            Some(_) => 0.0,
        };
        largest = Some(largest.map_or(d, |l| l.max(d)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same profile by brute force over every earlier non-overlapping stretch.
    fn brute(y: &[f64], w: usize) -> Vec<f64> {
        (0..y.len())
            .map(|t| {
                if t + 1 < 2 * w {
                    return f64::NAN;
                }
                let i = t + 1 - w;
                let nearest = (0..=i - w)
                    .map(|j| distance2(y, i, j, w))
                    .fold(f64::INFINITY, f64::min);
                distance(nearest, &y[i..i + w])
            })
            .collect()
    }

    fn wave(n: usize) -> Vec<f64> {
        (0..n)
            .map(|t| 1000.0 + 50.0 * (t as f64 * 0.3).sin() + ((t * 7919) % 13) as f64 * 0.1)
            .collect()
    }

    #[test]
    fn the_recurrence_matches_brute_force() {
        let y = wave(700);
        for w in [1, 5, 32] {
            let fast = left_profile(&y, w);
            let slow = brute(&y, w);
            for (t, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-6,
                    "w {w} t {t}: {a} vs {b}"
                );
            }
        }
        assert!(left_profile(&y[..10], 8).iter().all(|v| v.is_nan()));
        assert!(left_profile(&y, 0).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn a_repeated_pattern_is_familiar_and_a_new_one_is_novel() {
        // A square wave between two levels with a little noise (the pair repeats every 880
        // points); an excursion to 60 at 1000, the same excursion one 880-point cycle later,
        // and one to 160 at 2500.
        let mut y: Vec<f64> = (0..3000)
            .map(|t| {
                let level = if (t / 40) % 2 == 0 { 30.0 } else { 100.0 };
                level + ((t * 7919) % 11) as f64 * 0.05
            })
            .collect();
        for start in [1000, 1880] {
            for v in &mut y[start..start + 20] {
                *v = 60.0;
            }
        }
        for v in &mut y[2500..2520] {
            *v = 160.0;
        }
        let novelty = relative_novelty(&left_profile(&y, 32), 320);
        assert!(novelty[..=320].iter().all(|v| v.is_nan()));
        let most = |r: std::ops::Range<usize>| novelty[r].iter().fold(0.0f64, |a, &b| a.max(b));
        assert!(
            most(1000..1040) > 1.0,
            "first excursion: {}",
            most(1000..1040)
        );
        assert!(most(1880..1920) < 0.05, "its repeat: {}", most(1880..1920));
        assert!(
            most(2500..2540) > 1.0,
            "the new level: {}",
            most(2500..2540)
        );
    }
}
