//! Anomaly thresholds learned from labelled rows: `CREATE MODEL m DETECT ANOMALIES ... WITH
//! (labels = 'col')`. The column marks some rows as anomalies (`true` or a non-zero number),
//! some as normal (`false` or 0) and leaves the rest unlabelled (NULL); the model's score
//! threshold is the one with the best F1 on the labelled rows.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};

use crate::error::{ModelError, ModelResult};

/// The threshold chosen and how it scores on the labelled rows (in sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Rows scoring at least this are anomalies.
    pub threshold: f32,
    /// F1 on the labelled rows.
    pub f1: f64,
    /// Precision on the labelled rows.
    pub precision: f64,
    /// Recall on the labelled rows.
    pub recall: f64,
    /// Labelled rows.
    pub labelled: usize,
    /// Of them, labelled anomalies.
    pub anomalies: usize,
}

/// Read a label column: `Some(true)` an anomaly, `Some(false)` normal, `None` unlabelled.
pub fn read_labels(column: &ArrayRef, name: &str) -> ModelResult<Vec<Option<bool>>> {
    match column.data_type() {
        DataType::Boolean => Ok(column.as_boolean().iter().collect()),
        DataType::Null => Ok(vec![None; column.len()]),
        t if t.is_numeric() => {
            let values = cast(column, &DataType::Float64)?;
            Ok(values
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.filter(|v| !v.is_nan()).map(|v| v != 0.0))
                .collect())
        }
        t => Err(ModelError::WrongType(format!(
            "the labels column \"{name}\" must be boolean or numeric (true / non-zero: an \
             anomaly, false / 0: normal, NULL: unlabelled), not {t}"
        ))),
    }
}

/// The score threshold with the best F1 on the rows `labels` marks (ties: the higher
/// threshold). Needs at least one labelled anomaly and one labelled normal row.
pub fn best_threshold(
    scores: &[f32],
    labels: &[Option<bool>],
    name: &str,
) -> ModelResult<Threshold> {
    let mut labelled: Vec<(f32, bool)> = scores
        .iter()
        .zip(labels)
        .filter_map(|(&s, l)| l.map(|l| (s, l)))
        .collect();
    let anomalies = labelled.iter().filter(|p| p.1).count();
    if anomalies == 0 || anomalies == labelled.len() {
        return Err(ModelError::BadTrainingData(format!(
            "the labels column \"{name}\" needs rows labelled as anomalies (true or non-zero) and \
             rows labelled as normal (false or 0); it has {anomalies} anomalies among {} \
             labelled rows",
            labelled.len()
        )));
    }
    labelled.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = (f64::NEG_INFINITY, 0usize, 0usize);
    let mut tp = 0usize;
    for (i, &(score, is_anomaly)) in labelled.iter().enumerate() {
        tp += usize::from(is_anomaly);
        // Cut only between distinct scores: rows with equal scores are flagged together.
        if labelled.get(i + 1).is_some_and(|next| next.0 == score) {
            continue;
        }
        let flagged = i + 1;
        let f1 = 2.0 * tp as f64 / (flagged + anomalies) as f64;
        if f1 > best.0 {
            best = (f1, flagged, tp);
        }
    }
    let (f1, flagged, tp) = best;
    let last = labelled[flagged - 1].0;
    let threshold = match labelled.get(flagged) {
        Some(next) => last - (last - next.0) / 2.0,
        None => last,
    };
    Ok(Threshold {
        threshold,
        f1,
        precision: tp as f64 / flagged as f64,
        recall: tp as f64 / anomalies as f64,
        labelled: labelled.len(),
        anomalies,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};

    use super::*;

    #[test]
    fn the_threshold_maximises_f1_on_the_labelled_rows() {
        let scores = [0.9, 0.8, 0.75, 0.7, 0.5, 0.45, 0.4, 0.85];
        let labels = [
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            Some(false),
            None,
            Some(false),
            None,
        ];
        let t = best_threshold(&scores, &labels, "y").expect("threshold");
        // Flagging 0.9, 0.8, 0.75, 0.7: tp 3, F1 = 6 / 7; flagging two: F1 = 4 / 5.
        assert!((t.f1 - 6.0 / 7.0).abs() < 1e-12, "{t:?}");
        assert!((t.threshold - 0.6).abs() < 1e-6, "{t:?}");
        assert_eq!((t.labelled, t.anomalies), (6, 3));
        assert!((t.precision - 0.75).abs() < 1e-12 && (t.recall - 1.0).abs() < 1e-12);
    }

    #[test]
    fn labels_are_read_and_checked() {
        let b: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]));
        assert_eq!(
            read_labels(&b, "l").expect("bool"),
            vec![Some(true), None, Some(false)]
        );
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), Some(0), None]));
        assert_eq!(
            read_labels(&n, "l").expect("int"),
            vec![Some(true), Some(false), None]
        );
        let s: ArrayRef = Arc::new(StringArray::from(vec!["yes"]));
        assert!(matches!(
            read_labels(&s, "l"),
            Err(ModelError::WrongType(_))
        ));
        let err = best_threshold(&[0.5, 0.6], &[Some(false), None], "l").expect_err("no anomaly");
        assert!(err.to_string().contains("0 anomalies among 1"), "{err}");
    }
}
