//! Anomaly scores of one series, computed causally: the score of a point uses only the points
//! before it, so a score never changes when later data arrives (alerting on a live metric
//! sees the same scores as a replay). The one thing read from the whole series is its typical
//! time step, which names the candidate seasons; a season only takes part from its third
//! period on, so whether a longer series would have offered it does not change earlier scores.
//!
//! For each point `t`:
//! * **expected** (a one-step forecast): the median of the previous
//!   [`AnomalySpec::level_window`] values (a robust local level that follows level changes
//!   after half a window); where the timestamps suggest a daily or weekly season (or
//!   `season_length` names one), also that level computed on deseasonalised values plus a
//!   robust seasonal profile (`seasonal`: per-phase medians of the last five periods, started
//!   with two offsets per phase from the first two periods), each season both on the values
//!   (additive) and on their logarithms (multiplicative: deviations grow with the level, as
//!   in demand; stopped at the first value ≤ 0). Each way of predicting keeps its own
//!   residuals; a season's two variants compare their scales in the values' units (a log
//!   scale times the geometric mean of the values: the Gaussian likelihood's Jacobian) and
//!   the better one is used from the point where its scale is below 0.8 × the local one's
//!   (once it has a period of residuals), so a metric with a daily cycle is judged against
//!   its usual value for that time of day — a multiplicative one on its relative deviation,
//!   with a band wider above than below — and one without keeps the local level;
//! * **residual z**: `(y[t] − expected) / scale`, with `scale` = 1.4826 × the MAD of the
//!   previous [`AnomalySpec::history`] residuals (a robust standard deviation);
//! * three tests on it: the **point** test `|z|` (spikes, dips); the **level-shift** test
//!   `|Σ clip(z, ±3) over the last 6 points| / √6` (a change of level that no single point
//!   shows; the clip keeps one spike from flagging its neighbours); the **variance-shift**
//!   test, the clipped squares `Σ min(z², 9)` of the last 12 points standardised by their
//!   mean and variance under a normal model (one-sided: bursts of larger variance, with or
//!   without a level change);
//! * a p-value for the largest statistic: the larger of a Student-t tail (tripled for the
//!   three tests; 0.37 × the residuals behind the scale as degrees of freedom, so a scale
//!   from few residuals needs a larger deviation, and a full history of 1 000 is nearly
//!   Gaussian) and the empirical tail among the statistics of the last `history` points
//!   (a conformal p-value, which keeps heavy-tailed metrics from alerting all the time; the
//!   single largest past statistic is left out, so one huge spike does not hide the next,
//!   smaller anomaly); past the largest statistic counted, the empirical tail continues with
//!   the t tail's shape;
//! * `score = 1 − p` in [0, 1];
//! * **novelty** (see [`novelty`]): the distance from the last [`AnomalySpec::novelty_window`]
//!   values to the most similar earlier stretch, divided by the largest such distance before
//!   it (above 1: more novel than any stretch before; near 0: a close repeat of earlier values, such
//!   as a metric's routine jumps between two levels, next to a far more novel stretch seen
//!   before); NaN during the first 10 windows;
//! * `is_anomaly` marks where an alert should fire ([`alert_onsets`]): the score reaches the
//!   sensitivity where the stretch is not familiar (novelty ≥ [`AnomalySpec::novelty_gate`],
//!   or unknown yet), or the stretch is the most novel so far (novelty above 1), and no alert
//!   fired in the previous [`AnomalySpec::cooldown`] points (the points after an onset keep
//!   their scores but do not alert again — `score >= sensitivity` selects every point whose
//!   residual is unusual).
//!
//! The defaults (sensitivity, novelty window and gate, cooldown) were chosen by
//! leave-one-file-out cross-validation over the 24 NAB files (`models/tests/anomaly_nab.rs`,
//! benches/README.md).
//!
//! `lower` / `upper` are `expected ∓ z* · scale`, where `z*` is the Gaussian point-test bound at
//! the sensitivity: the band a single value must leave to be an anomaly by itself (once the
//! scale rests on a long history; early on the t tail asks for more).
//! The first points (fewer than [`MIN_HISTORY`] before them) get score 0: there is nothing to
//! compare them with.

pub mod novelty;
mod score;
mod seasonal;
pub mod stored;

pub use score::MIN_HISTORY;
pub use seasonal::{SeasonPhases, season_phases};

use crate::forecast::normal_quantile;
use score::{Scorer, median};
use seasonal::{SeasonalPoint, SeasonalStream};

/// How anomalies are scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalySpec {
    /// Score at or above which a point is an anomaly, in (0, 1).
    pub sensitivity: f64,
    /// Values whose median is the expected value.
    pub level_window: usize,
    /// Residuals (and statistics) the scale and the empirical tail come from.
    pub history: usize,
    /// Values per stretch whose novelty gates the alerts (0: no gate, alerts on the score
    /// alone).
    pub novelty_window: usize,
    /// Novelty below which a high score does not alert (the stretch is familiar).
    pub novelty_gate: f64,
    /// Points after an alert during which no other alert fires.
    pub cooldown: usize,
}

impl Default for AnomalySpec {
    fn default() -> Self {
        Self {
            sensitivity: 0.998,
            level_window: 12,
            history: 1000,
            novelty_window: 32,
            novelty_gate: 0.2,
            cooldown: 100,
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
    /// Novelty of the stretch ending at the point (NaN while unknown).
    pub novelty: Vec<f64>,
    /// Alert onsets (see [`alert_onsets`]).
    pub is_anomaly: Vec<bool>,
}

/// A seasonal stream replaces the local one only when its residual scale is below this
/// fraction of the local one's (a season has to explain a clear share of the variation).
const SEASONAL_GAIN: f64 = 0.8;

/// Score a series (values in time order; `NaN` = missing, scored `NaN` and skipped) whose
/// points may follow `seasons` (see [`season_phases`]; none: the local level only).
pub fn detect(y: &[f64], seasons: &[SeasonPhases], spec: &AnomalySpec) -> AnomalyScores {
    let n = y.len();
    let mut out = AnomalyScores {
        expected: vec![f64::NAN; n],
        lower: vec![f64::NAN; n],
        upper: vec![f64::NAN; n],
        score: vec![f64::NAN; n],
        novelty: vec![f64::NAN; n],
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
    let mut local = Scorer::new();
    let mut seasonal: Vec<SeasonalStream> = seasons
        .iter()
        .filter(|s| s.phase.len() == n && s.period >= 2)
        // Each season twice, additive then multiplicative (the pairs are read as chunks of 2).
        .flat_map(|s| [SeasonalStream::new(s, false), SeasonalStream::new(s, true)])
        .collect();
    let mut buf = Vec::with_capacity(spec.level_window);
    let lw = spec.level_window.max(1);
    let observed: Vec<f64> = seen.iter().map(|p| p.1).collect();
    let novelty = novelty::relative_novelty(
        &novelty::left_profile(&observed, spec.novelty_window),
        NOVELTY_WARM_UP * spec.novelty_window,
    );
    for (&(i, _), v) in seen.iter().zip(novelty) {
        out.novelty[i] = v;
    }
    for (k, &(i, v)) in seen.iter().enumerate() {
        let expected = if k == 0 {
            v
        } else {
            buf.clear();
            buf.extend(seen[k.saturating_sub(lw)..k].iter().map(|p| p.1));
            median(&mut buf)
        };
        let local_scale = local.push(v - expected, expected, spec.history);
        // The stream the point is judged by: local unless a season predicts clearly better;
        // of a season's additive and multiplicative variants, the one with the smaller
        // comparable scale. Only that stream's score is computed.
        let mut best: Option<(SeasonalPoint, &Scorer)> = None;
        let mut best_scale = local.scale();
        for variants in seasonal.chunks_mut(2) {
            let mut pick: Option<(SeasonalPoint, &Scorer, f64)> = None;
            for stream in variants {
                let period = stream.period();
                let Some(point) = stream.push(&seen, k, lw, spec.history) else {
                    continue;
                };
                // A season competes once it has a period of residuals of its own.
                let scale = stream.comparable_scale(spec.history);
                if point.scale.is_some()
                    && stream.scorer.len() > period
                    && pick.as_ref().is_none_or(|p| scale < p.2)
                {
                    pick = Some((point, &stream.scorer, scale));
                }
            }
            if let Some((point, scorer, scale)) = pick
                && scale < SEASONAL_GAIN * best_scale
            {
                best = Some((point, scorer));
                best_scale = scale;
            }
        }
        let (expected, scale, scorer) = match &best {
            Some((p, scorer)) => (p.expected(), p.scale, *scorer),
            None => (expected, local_scale, &local),
        };
        out.expected[i] = expected;
        let Some(scale) = scale else {
            out.score[i] = 0.0;
            continue;
        };
        let score = scorer.latest_score();
        (out.lower[i], out.upper[i]) = match &best {
            Some((p, _)) => p.band(z_band, scale),
            None => (expected - z_band * scale, expected + z_band * scale),
        };
        out.score[i] = score;
    }
    out.is_anomaly = alert_onsets(&out.score, &out.novelty, spec);
    out
}

/// Windows of values before novelty is known (the first stretches have few neighbours).
const NOVELTY_WARM_UP: usize = 10;

/// Where alerts fire, given each point's score and novelty (NaN score: a missing value, never
/// an alert and not counted in the cooldown): the score reaches `spec.sensitivity` and the
/// novelty is unknown (NaN) or at least `spec.novelty_gate` (always, when
/// `spec.novelty_window` is 0), or the novelty is above 1; and no alert fired within the
/// previous `spec.cooldown` scored points.
pub fn alert_onsets(score: &[f64], novelty: &[f64], spec: &AnomalySpec) -> Vec<bool> {
    let mut out = vec![false; score.len()];
    let mut last: Option<usize> = None;
    let scored = score
        .iter()
        .zip(novelty)
        .enumerate()
        .filter(|(_, (s, _))| !s.is_nan());
    for (k, (i, (&s, &nov))) in scored.enumerate() {
        let familiar = spec.novelty_window > 0 && nov < spec.novelty_gate;
        let fires = (s >= spec.sensitivity && !familiar) || nov > 1.0;
        if fires && last.is_none_or(|l| k - l > spec.cooldown) {
            out[i] = true;
            last = Some(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-0.5, 0.5).
    pub(super) fn noise(n: usize, seed: f64) -> Vec<f64> {
        (0..n)
            .map(|t| ((t as f64 * 12.9898 + seed).sin() * 43_758.545).fract() - 0.5)
            .collect()
    }

    #[test]
    fn alerts_need_an_unfamiliar_stretch_and_respect_the_cooldown() {
        let spec = AnomalySpec {
            sensitivity: 0.99,
            novelty_gate: 0.2,
            cooldown: 3,
            ..AnomalySpec::default()
        };
        let nan = f64::NAN;
        // 0: high score, novelty unknown: fires. 1: within the cooldown. 4: high but familiar.
        // 5: a record with a low score: fires. 6: missing, not counted, so 9 (high and
        // unfamiliar) is 3 scored points after 5: still within the cooldown.
        let score = [0.999, 0.999, 0.1, 0.1, 0.999, 0.2, nan, 0.1, 0.1, 0.995];
        let novelty = [nan, nan, 0.5, 0.5, 0.1, 1.3, nan, 0.3, 0.3, 0.3];
        let alerts = alert_onsets(&score, &novelty, &spec);
        let at: Vec<usize> = (0..score.len()).filter(|&i| alerts[i]).collect();
        assert_eq!(at, vec![0, 5]);
        // Without a novelty window the score alone decides.
        let plain = AnomalySpec {
            novelty_window: 0,
            ..spec
        };
        let alerts = alert_onsets(&score, &novelty, &plain);
        let at: Vec<usize> = (0..score.len()).filter(|&i| alerts[i]).collect();
        assert_eq!(at, vec![0, 4, 9]);
    }

    #[test]
    fn a_spike_and_a_level_shift_are_found_and_noise_is_quiet() {
        let mut y: Vec<f64> = noise(2000, 1.0).iter().map(|e| 100.0 + e).collect();
        y[1200] += 15.0;
        for v in &mut y[1600..] {
            *v += 3.0;
        }
        let s = detect(&y, &[], &AnomalySpec::default());
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
        let s = detect(&y, &[], &AnomalySpec::default());
        assert!(s.score[50].is_nan());
        assert!(s.is_anomaly[80]);
        assert_eq!(s.is_anomaly.iter().filter(|&&a| a).count(), 1);
    }

    #[test]
    fn a_value_normal_by_day_but_not_at_night_needs_the_daily_season() {
        // Half-hourly data, 20 days of a daily wave; at a trough of day 15 the value jumps to
        // the daily mean, a level the series passes twice a day.
        const HALF_HOUR: i64 = 30 * 60;
        let times: Vec<i64> = (0..48 * 20).map(|t| t * HALF_HOUR).collect();
        let wave =
            |t: usize| 100.0 - 50.0 * (2.0 * std::f64::consts::PI * (t % 48) as f64 / 48.0).cos();
        let mut y: Vec<f64> = noise(times.len(), 3.0)
            .iter()
            .enumerate()
            .map(|(t, e)| wave(t) + 2.0 * e)
            .collect();
        let at = 15 * 48 + 1;
        y[at] = 100.0;
        let seasons = season_phases(&times, 1_000_000_000, None);
        assert_eq!(
            seasons.iter().map(|s| s.period).collect::<Vec<_>>(),
            vec![48, 336]
        );
        // The residual tests alone (the novelty rule, tested in `novelty`, would also flag a
        // value never seen at that time of day, and adds alerts at early records).
        let spec = AnomalySpec {
            novelty_window: 0,
            ..AnomalySpec::default()
        };
        let seasonal = detect(&y, &seasons, &spec);
        let local = detect(&y, &[], &spec);
        assert!(seasonal.is_anomaly[at], "seasonal: {}", seasonal.score[at]);
        assert!(!local.is_anomaly[at], "local: {}", local.score[at]);
        // After the warm-up the seasonal expected value follows the wave closely.
        let err = |s: &AnomalyScores| {
            (5 * 48..at)
                .map(|t| (s.expected[t] - wave(t)).abs())
                .sum::<f64>()
                / (at - 5 * 48) as f64
        };
        assert!(err(&seasonal) < 2.0, "{}", err(&seasonal));
        assert!(err(&local) > 10.0, "{}", err(&local));
        let alarms = |s: &AnomalyScores| s.is_anomaly[..at].iter().filter(|&&a| a).count();
        assert!(
            alarms(&seasonal) <= 2,
            "{} seasonal alarms",
            alarms(&seasonal)
        );
    }

    #[test]
    fn a_burst_of_larger_variance_without_a_level_change_is_found() {
        // Gaussian noise (Box–Muller over the hash noise), then 20 points alternating at
        // ±2.2 σ: no point leaves the point-test band and the signs cancel in the shift test,
        // so only the variance test sees the burst.
        let u = noise(4000, 7.0);
        let mut y: Vec<f64> = u
            .chunks(2)
            .map(|p| {
                let uniform = |v: f64| (v + 0.5).rem_euclid(1.0);
                let (u1, u2) = (uniform(p[0]).max(1e-12), uniform(p[1]));
                50.0 + (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        for (j, v) in y[1500..1520].iter_mut().enumerate() {
            *v = if j % 2 == 0 { 52.2 } else { 47.8 };
        }
        let s = detect(&y, &[], &AnomalySpec::default());
        let band = (1500..1520).all(|t| s.lower[t] < y[t] && y[t] < s.upper[t]);
        assert!(band, "a burst point left the band");
        assert!(
            s.is_anomaly[1500..1520].iter().any(|&a| a),
            "{:?}",
            &s.score[1500..1520]
        );
        assert!(s.is_anomaly[..1500].iter().filter(|&&a| a).count() <= 3);
    }

    #[test]
    fn an_incident_early_in_the_seasonal_profile_does_not_echo_the_next_day() {
        // A week of hourly latency with a daily cycle; an incident (× 6) in the third day,
        // the first one the daily profile covers.
        const HOUR: i64 = 3600;
        let times: Vec<i64> = (0..24 * 7).map(|t| t * HOUR).collect();
        let mut y: Vec<f64> = noise(times.len(), 5.0)
            .iter()
            .enumerate()
            .map(|(t, e)| {
                40.0 * (1.0 + 0.3 * ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin())
                    + 3.0 * e
            })
            .collect();
        let at = 50;
        y[at] *= 6.0;
        let seasons = season_phases(&times, 1_000_000_000, None);
        let s = detect(&y, &seasons, &AnomalySpec::default());
        assert!(s.is_anomaly[at]);
        for day in 1..5 {
            let t = at + 24 * day;
            assert!(
                s.score[t] < 0.99,
                "day {day} after: value {} expected {} score {}",
                y[t],
                s.expected[t],
                s.score[t]
            );
        }
    }

    #[test]
    fn a_multiplicative_season_judges_night_values_on_their_own_scale() {
        // Half-hourly demand from 500 at night to 20 000 by day, with 3 % noise: a night value
        // 60 % above normal is small next to the daytime noise but not next to the night's.
        const HALF_HOUR: i64 = 30 * 60;
        let times: Vec<i64> = (0..48 * 21).map(|t| t * HALF_HOUR).collect();
        let shape = |t: usize| {
            let x = (t % 48) as f64 / 48.0;
            500.0 + 19_500.0 * (std::f64::consts::PI * x).sin().powi(2)
        };
        let mut y: Vec<f64> = noise(times.len(), 11.0)
            .iter()
            .enumerate()
            .map(|(t, e)| shape(t) * (1.0 + 0.06 * ((e + 0.5).rem_euclid(1.0) - 0.5)))
            .collect();
        let at = 17 * 48 + 1;
        y[at] *= 1.6;
        let seasons = season_phases(&times, 1_000_000_000, None);
        let s = detect(&y, &seasons, &AnomalySpec::default());
        assert!(
            s.is_anomaly[at],
            "score {} expected {}",
            s.score[at], s.expected[at]
        );
        // The band is multiplicative: wider above than below, narrow at night.
        let t = at - 48;
        assert!(s.upper[t] - s.expected[t] > s.expected[t] - s.lower[t]);
        let day = t + 24;
        assert!(s.upper[day] - s.lower[day] > 10.0 * (s.upper[t] - s.lower[t]));
        let alarms = s.is_anomaly[..at].iter().filter(|&&a| a).count();
        assert!(alarms <= 2, "{alarms} alarms before the anomaly");
    }
}
