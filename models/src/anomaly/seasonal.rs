//! Seasonal expected values for series anomaly scores: which seasons a series' timestamps
//! suggest, each point's phase in them, and a causal robust seasonal profile.
//!
//! The profile of a season of `period` points is a per-phase offset from the local level:
//! * it starts once the series has two periods: every point of them gives its phase an offset
//!   from the median of the period around it (centred where the two periods allow; nothing
//!   after the current point is read), so each phase starts with two offsets;
//! * from then on each point's offset (`value − local level`) joins the last
//!   [`PERIODS_KEPT`] offsets of its phase, whose median is the phase's seasonal value;
//! * the local level is the median of the last `level_window` deseasonalised values.

use super::score::{Scorer, median};
use crate::forecast::time::season_candidates;

/// Offsets kept per phase (the last this many periods): the median of five survives two
/// anomalous periods.
const PERIODS_KEPT: usize = 5;

/// Longest season followed, in points (the profile keeps [`PERIODS_KEPT`] values per phase).
const MAX_PERIOD: usize = 20_000;

const DAY_NANOS: i64 = 86_400_000_000_000;

/// A season a series may follow: its length in points and the phase of every point.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonPhases {
    /// Points per season.
    pub period: usize,
    /// Phase (0..period) of each point of the series, in its order.
    pub phase: Vec<usize>,
}

/// The typical step of sorted times: the median positive difference (`None` with fewer than
/// two distinct times).
fn typical_step(times: &[i64]) -> Option<i64> {
    let mut d: Vec<i64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .filter(|&d| d > 0)
        .collect();
    if d.is_empty() {
        return None;
    }
    let mid = d.len() / 2;
    Some(*d.select_nth_unstable(mid).1)
}

/// The seasons worth trying for a series with these sorted times (ticks of `nanos`
/// nanoseconds; 0 = plain integers): `season_length` when given (≤ 1: none), else, for
/// timestamps, the daily and weekly seasons (or weekly and yearly for daily data, ...) that
/// fit twice in the series. Integer times have no clock, so they only get a given length.
/// Phases follow the clock: a daily season's phase is the time of day (UTC).
pub fn season_phases(times: &[i64], nanos: i64, season_length: Option<usize>) -> Vec<SeasonPhases> {
    let Some(step) = typical_step(times) else {
        return Vec::new();
    };
    let periods: Vec<usize> = match season_length {
        Some(m) if m <= 1 => Vec::new(),
        Some(m) => vec![m],
        None if nanos == 0 => Vec::new(),
        None => season_candidates(step, nanos)
            .into_iter()
            // Seasons shorter than a day (an hourly cycle in minute data) are left out.
            .filter(|&m| (m as i64).saturating_mul(step).saturating_mul(nanos) >= DAY_NANOS)
            .collect(),
    };
    periods
        .into_iter()
        .filter(|&m| m <= MAX_PERIOD && m.saturating_mul(2) <= times.len())
        .map(|m| SeasonPhases {
            period: m,
            phase: times
                .iter()
                .map(|t| t.div_euclid(step).rem_euclid(m as i64) as usize)
                .collect(),
        })
        .collect()
}

/// A seasonal profile plus local level, followed point by point, and the scores of its
/// residuals.
#[derive(Debug)]
pub(super) struct SeasonalStream<'a> {
    season: &'a SeasonPhases,
    /// The last offsets of each phase (oldest first).
    offsets: Vec<Vec<f64>>,
    /// Deseasonalised observed values.
    deseasonalised: Vec<f64>,
    /// Whether the profile has been started.
    ready: bool,
    pub(super) scorer: Scorer,
    buf: Vec<f64>,
}

/// One point of a seasonal stream: its expected value and, once it can be scored, the scale
/// of its residual (its score is then [`Scorer::latest_score`]).
pub(super) struct SeasonalPoint {
    pub(super) expected: f64,
    pub(super) scale: Option<f64>,
}

impl<'a> SeasonalStream<'a> {
    pub(super) fn new(season: &'a SeasonPhases) -> Self {
        Self {
            season,
            offsets: vec![Vec::with_capacity(PERIODS_KEPT); season.period],
            deseasonalised: Vec::new(),
            ready: false,
            scorer: Scorer::new(),
            buf: Vec::new(),
        }
    }

    /// Points per season.
    pub(super) fn period(&self) -> usize {
        self.season.period
    }

    fn seasonal(&mut self, phase: usize) -> f64 {
        let o = &self.offsets[phase];
        if o.is_empty() {
            return 0.0;
        }
        self.buf.clear();
        self.buf.extend_from_slice(o);
        median(&mut self.buf)
    }

    fn record(&mut self, phase: usize, offset: f64) {
        let o = &mut self.offsets[phase];
        if o.len() == PERIODS_KEPT {
            o.remove(0);
        }
        o.push(offset);
    }

    /// Start the profile from the first two periods of `seen` (observed `(position, value)`):
    /// every point's offset from the median of the period around it (a window of one period,
    /// centred where the two periods allow), so each phase starts with two offsets and one
    /// incident in the third period cannot carry its phase (a median of three).
    fn start(&mut self, seen: &[(usize, f64)]) {
        let p = self.season.period;
        let half = p / 2;
        for (j, &(i, v)) in seen.iter().enumerate().take(2 * p) {
            let from = j.saturating_sub(half).min(p);
            self.buf.clear();
            self.buf.extend(seen[from..from + p].iter().map(|s| s.1));
            let level = median(&mut self.buf);
            self.record(self.season.phase[i], v - level);
        }
        for &(i, v) in seen {
            let s = self.seasonal(self.season.phase[i]);
            self.deseasonalised.push(v - s);
        }
        self.ready = true;
    }

    /// The `k`-th observed point (`seen[k]`, the points before it in `seen[..k]`): its expected
    /// value and score, or `None` before the profile starts.
    pub(super) fn push(
        &mut self,
        seen: &[(usize, f64)],
        k: usize,
        level_window: usize,
        history: usize,
    ) -> Option<SeasonalPoint> {
        if !self.ready {
            if k < 2 * self.season.period {
                return None;
            }
            self.start(&seen[..k]);
        }
        let (i, v) = seen[k];
        let phase = self.season.phase[i];
        let s = self.seasonal(phase);
        let lw = level_window.max(1);
        let n = self.deseasonalised.len();
        self.buf.clear();
        self.buf
            .extend_from_slice(&self.deseasonalised[n.saturating_sub(lw)..]);
        let level = median(&mut self.buf);
        let expected = level + s;
        let scale = self.scorer.push(v - expected, expected, history);
        self.deseasonalised.push(v - s);
        self.record(phase, v - level);
        Some(SeasonalPoint { expected, scale })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    #[test]
    fn five_minute_data_gets_daily_and_weekly_phases_on_the_clock() {
        let times: Vec<i64> = (0..5000).map(|t| 3 * MIN + t * 5 * MIN).collect();
        let s = season_phases(&times, 1, None);
        assert_eq!(
            s.iter().map(|s| s.period).collect::<Vec<_>>(),
            vec![288, 2016]
        );
        // 00:03 is in the first five minutes of the day.
        assert_eq!(s[0].phase[0], 0);
        assert_eq!(s[0].phase[12], 12);
        assert_eq!(s[0].phase[288], 0);
    }

    #[test]
    fn short_series_integers_and_explicit_lengths() {
        let times: Vec<i64> = (0..100).map(|t| t * 5 * MIN).collect();
        assert!(season_phases(&times, 1, None).is_empty(), "not two days");
        let ints: Vec<i64> = (0..100).collect();
        assert!(season_phases(&ints, 0, None).is_empty());
        let s = season_phases(&ints, 0, Some(7));
        assert_eq!(s[0].period, 7);
        assert_eq!(s[0].phase[9], 2);
        assert!(season_phases(&ints, 0, Some(1)).is_empty());
        assert!(season_phases(&[5], 1, None).is_empty());
    }
}
