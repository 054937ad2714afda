//! Histogram bins: each matrix column becomes at most 256 `u8` bins (0 = missing).

use crate::features::{DerivedColumn, Matrix};

/// Largest category code with a bin of its own; rarer categories share the last bin.
pub(crate) const CAT_OWN_BINS: usize = 254;
/// Rows sampled to place numeric bin boundaries.
const SAMPLE_ROWS: usize = 200_000;

/// How one column's values map to bins.
#[derive(Debug, Clone)]
pub(crate) struct BinMapper {
    /// Numeric: bin `b >= 1` holds `thresholds[b-2] < x <= thresholds[b-1]`.
    pub(crate) thresholds: Vec<f32>,
    /// Category codes instead of numbers.
    pub(crate) categorical: bool,
    /// Number of bins including the missing bin 0.
    pub(crate) n_bins: usize,
}

impl BinMapper {
    fn fit(values: &[f32], column: &DerivedColumn, max_bin: usize) -> BinMapper {
        if let Some(n_cat) = column.categories {
            let own = n_cat.min(CAT_OWN_BINS);
            let shared = usize::from(n_cat > CAT_OWN_BINS);
            return BinMapper {
                thresholds: vec![],
                categorical: true,
                n_bins: 1 + own + shared,
            };
        }
        let step = (values.len() / SAMPLE_ROWS).max(1);
        let mut sample: Vec<f32> = values
            .iter()
            .step_by(step)
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        sample.sort_by(f32::total_cmp);
        let mut distinct: Vec<(f32, usize)> = vec![];
        for v in sample {
            match distinct.last_mut() {
                Some((d, c)) if *d == v => *c += 1,
                _ => distinct.push((v, 1)),
            }
        }
        let max_bin = max_bin.clamp(2, 255);
        let thresholds = if distinct.len() <= max_bin {
            distinct
                .windows(2)
                .map(|w| midpoint(w[0].0, w[1].0))
                .collect()
        } else {
            // Equal-count bins over the distinct values, cut only between distinct values.
            let total: usize = distinct.iter().map(|d| d.1).sum();
            let per_bin = total as f64 / max_bin as f64;
            let mut out = vec![];
            let mut acc = 0usize;
            let mut next_cut = per_bin;
            for w in distinct.windows(2) {
                acc += w[0].1;
                if acc as f64 >= next_cut && out.len() + 1 < max_bin {
                    out.push(midpoint(w[0].0, w[1].0));
                    while next_cut <= acc as f64 {
                        next_cut += per_bin;
                    }
                }
            }
            out
        };
        BinMapper {
            n_bins: thresholds.len() + 2,
            thresholds,
            categorical: false,
        }
    }

    /// The bin of a value.
    #[inline]
    pub(crate) fn bin(&self, x: f32) -> u8 {
        if x.is_nan() {
            0
        } else if self.categorical {
            cat_bin(x)
        } else {
            (1 + self.thresholds.partition_point(|&t| t < x)) as u8
        }
    }
}

/// Bin of a category code (`NaN` = missing or unseen = bin 0).
#[inline]
pub(crate) fn cat_bin(code: f32) -> u8 {
    if code.is_nan() || code < 0.0 {
        0
    } else if (code as usize) < CAT_OWN_BINS {
        code as u8 + 1
    } else {
        (CAT_OWN_BINS + 1) as u8
    }
}

fn midpoint(a: f32, b: f32) -> f32 {
    let m = a + (b - a) / 2.0;
    // Keep `a <= m < b` even where rounding would land on `b`.
    if m >= b { a } else { m }
}

/// A matrix turned into bins, column-major.
#[derive(Debug)]
pub(crate) struct BinnedMatrix {
    pub(crate) mappers: Vec<BinMapper>,
    pub(crate) cols: Vec<Vec<u8>>,
    /// Where each column's bins start in a histogram of all columns (`columns + 1` entries,
    /// the last being the total number of bins).
    pub(crate) offsets: Vec<usize>,
}

impl BinnedMatrix {
    pub(crate) fn build(x: &Matrix, derived: &[DerivedColumn], max_bin: usize) -> BinnedMatrix {
        use rayon::prelude::*;
        let (mappers, cols): (Vec<BinMapper>, Vec<Vec<u8>>) = x
            .cols
            .par_iter()
            .zip(derived.par_iter())
            .map(|(values, d)| {
                let m = BinMapper::fit(values, d, max_bin);
                let bins = values.iter().map(|&v| m.bin(v)).collect();
                (m, bins)
            })
            .unzip();
        let mut offsets = vec![0];
        for m in &mappers {
            offsets.push(offsets[offsets.len() - 1] + m.n_bins);
        }
        BinnedMatrix {
            mappers,
            cols,
            offsets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_bins_follow_thresholds() {
        let d = DerivedColumn {
            feature: 0,
            name: "x".into(),
            categories: None,
        };
        let vals: Vec<f32> = vec![1.0, 2.0, 3.0, f32::NAN, 2.0];
        let m = BinMapper::fit(&vals, &d, 255);
        assert_eq!(m.thresholds, vec![1.5, 2.5]);
        assert_eq!(m.bin(f32::NAN), 0);
        assert_eq!(m.bin(1.0), 1);
        assert_eq!(m.bin(1.5), 1);
        assert_eq!(m.bin(2.0), 2);
        assert_eq!(m.bin(9.0), 3);
        assert_eq!(m.n_bins, 4);
    }

    #[test]
    fn many_values_get_at_most_max_bin_bins() {
        let d = DerivedColumn {
            feature: 0,
            name: "x".into(),
            categories: None,
        };
        let vals: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let m = BinMapper::fit(&vals, &d, 255);
        assert!(m.n_bins <= 256 && m.n_bins > 200, "{}", m.n_bins);
        let counts = vals.iter().fold(vec![0usize; m.n_bins], |mut c, &v| {
            c[m.bin(v) as usize] += 1;
            c
        });
        assert!(
            counts[1..].iter().all(|&c| (30..=50).contains(&c)),
            "{counts:?}"
        );
    }
}
