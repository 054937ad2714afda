//! Seasonal expected values for series anomaly scores: which seasons a series' timestamps
//! suggest, each point's phase in them, and a causal robust seasonal profile.
//!
//! The profile of a season of `period` points is a per-phase offset from the local level:
//! * it starts once the series has two periods: every point of them gives its phase an offset
//!   from the median of the period around it (centred where the two periods allow; nothing
//!   after the current point is read), so each phase starts with two offsets;
//! * from then on each point's offset (`value − local level`) joins the last
//!   [`PERIODS_KEPT`] offsets of its phase, whose median is the phase's seasonal value;
//! * the local level is the median of the last `level_window` deseasonalised values;
//! * a multiplicative stream does all of this on the logarithms of the values (offsets are
//!   then ratios), and stops at the first value ≤ 0.

use super::score::{Scorer, SortedWindow, median};
use crate::forecast::time::{TimeAxis, season_candidates};

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

/// How a season's phase is read from a time.
#[derive(Debug, Clone, Copy)]
enum PhaseOf {
    /// The position in a clock span of this many ticks (a day, a week, a year), in steps:
    /// `(t mod span) / step`, so a step that does not divide the span (7 minutes in a day)
    /// still keeps each phase at the same time of day.
    Clock { span: i64 },
    /// The step count modulo the period (a given `season_length`, or coarse steps such as
    /// months whose calendar spans vary).
    Count,
}

/// Spans of clock seasons worth trying for a step of `step_ns` nanoseconds: a day and a week
/// for sub-daily data, a week and a year for daily data; none for coarser data.
fn clock_spans(step_ns: i64) -> Vec<i64> {
    let week = 7 * DAY_NANOS;
    if step_ns < DAY_NANOS {
        vec![DAY_NANOS, week]
    } else if step_ns < week {
        vec![week, 365 * DAY_NANOS]
    } else {
        Vec::new()
    }
}

/// The seasons worth trying for a series with these sorted times (ticks of `nanos`
/// nanoseconds; 0 = plain integers): `season_length` when given (≤ 1: none), else, for
/// timestamps, the daily and weekly seasons (or weekly and yearly for daily data; 52 for
/// weekly, 12 for monthly, 4 for quarterly steps) that fit twice in the series. Integer times
/// have no clock, so they only get a given length. Daily, weekly and yearly phases follow the
/// clock: a daily season's phase is the time of day (UTC).
pub fn season_phases(times: &[i64], nanos: i64, season_length: Option<usize>) -> Vec<SeasonPhases> {
    // Monthly, quarterly and yearly times count calendar months (their steps in ticks vary
    // from 28 to 31 days, and a phase counted in ticks would drift).
    let axis = TimeAxis::detect(times.iter().copied(), nanos);
    let months: Vec<i64>;
    let times = if axis.is_ticks() {
        times
    } else {
        months = times.iter().map(|&t| axis.to_axis(t, nanos)).collect();
        &months[..]
    };
    let Some(step) = typical_step(times) else {
        return Vec::new();
    };
    let seasons: Vec<(usize, PhaseOf)> = match season_length {
        Some(m) if m <= 1 => Vec::new(),
        Some(m) => vec![(m, PhaseOf::Count)],
        None if nanos == 0 => Vec::new(),
        None if !axis.is_ticks() => axis
            .season_candidates(step, nanos)
            .into_iter()
            .map(|m| (m, PhaseOf::Count))
            .collect(),
        None => {
            let step_ns = step.saturating_mul(nanos);
            let spans = clock_spans(step_ns);
            if spans.is_empty() {
                season_candidates(step, nanos)
                    .into_iter()
                    .map(|m| (m, PhaseOf::Count))
                    .collect()
            } else {
                spans
                    .into_iter()
                    .map(|span_ns| {
                        let span = span_ns / nanos;
                        (
                            (span as u64).div_ceil(step as u64) as usize,
                            PhaseOf::Clock { span },
                        )
                    })
                    .collect()
            }
        }
    };
    seasons
        .into_iter()
        .filter(|&(m, _)| (2..=MAX_PERIOD).contains(&m) && m.saturating_mul(2) <= times.len())
        .map(|(m, of)| SeasonPhases {
            period: m,
            phase: times
                .iter()
                .map(|&t| match of {
                    PhaseOf::Clock { span } => (t.rem_euclid(span) / step) as usize,
                    PhaseOf::Count => t.div_euclid(step).rem_euclid(m as i64) as usize,
                })
                .map(|p| p.min(m - 1))
                .collect(),
        })
        .collect()
}

/// A seasonal profile plus local level, followed point by point, and the scores of its
/// residuals.
#[derive(Debug)]
pub(super) struct SeasonalStream<'a> {
    season: &'a SeasonPhases,
    /// Followed on the log of the values (a multiplicative season: deviations grow with the
    /// level); such a stream stops at the first value ≤ 0.
    log: bool,
    /// A log stream that met a value ≤ 0.
    stopped: bool,
    /// Prefix sums of the (transformed) observed values, for their recent mean.
    prefix: Vec<f64>,
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
    /// Residual scale (for a log stream: of the log residuals).
    pub(super) scale: Option<f64>,
    /// From a log stream.
    log: bool,
    /// Expected value on the stream's own scale (the log for a log stream).
    expected_t: f64,
}

impl SeasonalPoint {
    /// The expected value in the values' units.
    pub(super) fn expected(&self) -> f64 {
        if self.log {
            self.expected_t.exp()
        } else {
            self.expected_t
        }
    }

    /// `(lower, upper)`: `z` scales either side of the expected value on the stream's own
    /// scale (a log stream's band is multiplicative: wider above than below).
    pub(super) fn band(&self, z: f64, scale: f64) -> (f64, f64) {
        if self.log {
            (
                (self.expected_t - z * scale).exp(),
                (self.expected_t + z * scale).exp(),
            )
        } else {
            (self.expected_t - z * scale, self.expected_t + z * scale)
        }
    }
}

impl<'a> SeasonalStream<'a> {
    /// A stream of `season` on the values (`log`: on their logarithms).
    pub(super) fn new(season: &'a SeasonPhases, log: bool) -> Self {
        Self {
            season,
            log,
            stopped: false,
            prefix: vec![0.0],
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

    /// A value as this stream follows it (`None`: a log stream's value ≤ 0).
    fn transform(&self, v: f64) -> Option<f64> {
        match self.log {
            false => Some(v),
            true if v > 0.0 => Some(v.ln()),
            true => None,
        }
    }

    /// The residual scale in the values' own units, comparable across streams: a log stream's
    /// scale times the geometric mean of its last `history` values (the Gaussian likelihood of
    /// the log residuals carries that Jacobian).
    pub(super) fn comparable_scale(&self, history: usize) -> f64 {
        let scale = self.scorer.scale();
        if !self.log {
            return scale;
        }
        // `prefix[n]` sums the n values seen; the last m of them give the mean log.
        let n = self.prefix.len() - 1;
        let m = history.min(n).max(1);
        let from = n.saturating_sub(m);
        scale * ((self.prefix[n] - self.prefix[from]) / m as f64).exp()
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
        let Some(x) = seen
            .iter()
            .map(|s| self.transform(s.1))
            .collect::<Option<Vec<f64>>>()
        else {
            self.stopped = true;
            return;
        };
        let p = self.season.period;
        let half = p / 2;
        // The window x[from..from + p] slides one point at a time: a sorted window keeps its
        // median without a selection per point.
        let mut window = SortedWindow::default();
        x[..p].iter().for_each(|&v| window.insert(v));
        let mut from = 0;
        for (j, &(i, _)) in seen.iter().enumerate().take(2 * p) {
            let want = j.saturating_sub(half).min(p);
            while from < want {
                window.remove(x[from]);
                window.insert(x[from + p]);
                from += 1;
            }
            self.record(self.season.phase[i], x[j] - window.median());
        }
        for (&(i, _), &x) in seen.iter().zip(&x) {
            let s = self.seasonal(self.season.phase[i]);
            self.deseasonalised.push(x - s);
            self.prefix.push(self.prefix[self.prefix.len() - 1] + x);
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
        if self.stopped {
            return None;
        }
        if !self.ready {
            if k < 2 * self.season.period {
                return None;
            }
            self.start(&seen[..k]);
            if self.stopped {
                return None;
            }
        }
        let (i, raw) = seen[k];
        let Some(v) = self.transform(raw) else {
            self.stopped = true;
            return None;
        };
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
        self.prefix.push(self.prefix[self.prefix.len() - 1] + v);
        self.record(phase, v - level);
        Some(SeasonalPoint {
            scale,
            log: self.log,
            expected_t: expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    #[test]
    fn monthly_data_gets_a_12_month_season_phased_by_calendar_month() {
        // Six years of month starts (Date32 days): the phase is the month of the year.
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        let times: Vec<i64> = (0..72)
            .map(|k| {
                let d = chrono::NaiveDate::from_ymd_opt(2019 + k / 12, (k % 12) as u32 + 1, 1)
                    .expect("date");
                (d - epoch).num_days()
            })
            .collect();
        let s = season_phases(&times, 86_400_000_000_000, None);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].period, 12);
        let months: Vec<usize> = (0..72).map(|k| k % 12).collect();
        let shift = s[0].phase[0];
        let phase: Vec<usize> = s[0].phase.iter().map(|p| (p + 12 - shift) % 12).collect();
        assert_eq!(phase, months);
    }

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
    fn a_step_that_does_not_divide_the_day_keeps_phases_on_the_time_of_day() {
        // Every 7 minutes for three days: 1440 / 7 = 205.7 steps a day.
        let times: Vec<i64> = (0..3 * 206).map(|t| t * 7 * MIN).collect();
        let s = season_phases(&times, 1, None);
        assert_eq!(s[0].period, 206);
        // The first points at or after 10:01 on each day (10:02 and 10:04) share a phase.
        let at = |day: i64| {
            let t = day * 1440 * MIN + 601 * MIN;
            let i = times.iter().position(|&x| x >= t).expect("in range");
            (times[i], s[0].phase[i])
        };
        let (t0, p0) = at(0);
        let (t1, p1) = at(1);
        assert_eq!(p0, 602 / 7, "{t0}");
        assert_eq!(p0, p1, "{t0} {t1}");
        assert!(s[0].phase.iter().all(|&p| p < 206));
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
