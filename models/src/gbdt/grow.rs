//! Growing one tree from gradients: LightGBM-style leaf-wise growth over histograms.
//!
//! Each leaf owns a contiguous range of a shared row-index buffer. A leaf's histogram (sum of
//! gradients, hessians and rows per bin, per column) is built only for the smaller child of a
//! split; the larger child's is the parent's minus the smaller one's. Histograms are built for
//! all columns in parallel. Numeric splits try missing values on both sides; categorical splits
//! order categories by gradient / hessian and scan the prefixes (as LightGBM does), or try each
//! category alone when there are few.

use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::binning::{BinMapper, BinnedMatrix};
use super::tree::{Node, Tree};

/// Tree-shape and regularisation settings.
#[derive(Debug, Clone)]
pub(crate) struct GrowParams {
    pub(crate) num_leaves: usize,
    /// 0 = unlimited.
    pub(crate) max_depth: usize,
    pub(crate) min_data_in_leaf: usize,
    pub(crate) min_sum_hessian: f64,
    pub(crate) lambda_l2: f64,
    pub(crate) min_gain: f64,
    pub(crate) cat_smooth: f64,
    pub(crate) cat_l2: f64,
    pub(crate) max_cat_threshold: usize,
    pub(crate) min_data_per_group: usize,
    pub(crate) max_cat_to_onehot: usize,
    /// Random forests: columns sampled at each node.
    pub(crate) features_per_node: Option<usize>,
}

/// Sums of one histogram bin, kept together so a row touches one place.
#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    g: f64,
    h: f64,
    c: u64,
}

/// Every value a `u8` bin can take.
const SLOTS: usize = 256;

/// A leaf's histogram: each column's bins (`BinnedMatrix::offsets`), side by side in one
/// buffer.
#[derive(Debug, Default)]
struct Hist(Vec<Bin>);

impl Hist {
    fn col(&self, x: &BinnedMatrix, f: usize) -> &[Bin] {
        &self.0[x.offsets[f]..x.offsets[f + 1]]
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Numeric { bin: u8, missing_left: bool },
    Categorical { set: [u64; 4] },
}

#[derive(Debug, Clone)]
struct Candidate {
    feature: usize,
    gain: f64,
    rule: Rule,
    lg: f64,
    lh: f64,
}

#[derive(Debug)]
struct Leaf {
    start: usize,
    len: usize,
    g: f64,
    h: f64,
    depth: usize,
    hist: Hist,
    best: Option<Candidate>,
    /// (parent node, is left child); `None` for the root.
    slot: Option<(usize, bool)>,
}

/// The grown tree and, per leaf, its rows in `indices` (leaf `i` holds `ranges[i]`).
#[derive(Debug)]
pub(crate) struct Grown {
    pub(crate) tree: Tree,
    pub(crate) ranges: Vec<std::ops::Range<usize>>,
}

fn set_insert(set: &mut [u64; 4], bin: usize) {
    set[bin >> 6] |= 1 << (bin & 63);
}

/// Below this many (rows × columns) a histogram is built on one thread.
const PARALLEL_WORK: usize = 32_768;

/// Buffers of finished leaves, reused for new histograms.
#[derive(Default)]
struct HistPool(Vec<Vec<Bin>>);

impl HistPool {
    fn take(&mut self, len: usize) -> Vec<Bin> {
        match self.0.pop() {
            Some(mut v) => {
                v.clear();
                v.resize(len, Bin::default());
                v
            }
            None => vec![Bin::default(); len],
        }
    }

    fn give(&mut self, h: Hist) {
        if !h.0.is_empty() {
            self.0.push(h.0);
        }
    }
}

/// From this many rows on, a column is accumulated into several copies of its histogram in
/// turn, merged at the end: a column with few distinct values (flags, small categories) would
/// otherwise send consecutive rows to the same bin, and each add would wait for the previous
/// one's store.
const SPREAD_ROWS: usize = 4096;

#[inline(always)]
fn add(bin: &mut Bin, g: f32, h: f32) {
    bin.g += g as f64;
    bin.h += h as f64;
    bin.c += 1;
}

/// Accumulate `(bin, gradient, hessian)` of some rows into one column's bins.
#[inline(always)]
fn accumulate(bins: &mut [Bin], mut rows: impl ExactSizeIterator<Item = (u8, f32, f32)>) {
    if rows.len() < SPREAD_ROWS {
        for (b, g, h) in rows {
            add(&mut bins[b as usize], g, h);
        }
        return;
    }
    let mut spare = [[Bin::default(); SLOTS]; 3];
    let [s0, s1, s2] = &mut spare;
    while let Some((b, g, h)) = rows.next() {
        add(&mut bins[b as usize], g, h);
        let Some((b, g, h)) = rows.next() else { break };
        add(&mut s0[b as usize], g, h);
        let Some((b, g, h)) = rows.next() else { break };
        add(&mut s1[b as usize], g, h);
        let Some((b, g, h)) = rows.next() else { break };
        add(&mut s2[b as usize], g, h);
    }
    for s in &spare {
        for (a, b) in bins.iter_mut().zip(s) {
            a.g += b.g;
            a.h += b.h;
            a.c += b.c;
        }
    }
}

/// The histogram of the rows in `rows`; `every_row` says they are `0..n` in order. Columns
/// not `allowed` stay zero.
fn build_hist(
    x: &BinnedMatrix,
    rows: &[u32],
    every_row: bool,
    g: &Gradients<'_>,
    pool: &mut HistPool,
) -> Hist {
    let Gradients {
        grad,
        hess,
        allowed,
    } = *g;
    let nf = x.cols.len();
    let mut buf = pool.take(x.offsets[nf]);
    let pair = |&r: &u32| (grad[r as usize], hess[r as usize]);
    let gh: Vec<(f32, f32)> = if every_row {
        vec![]
    } else if rows.len() < PARALLEL_PARTITION {
        rows.iter().map(pair).collect()
    } else {
        rows.par_iter().map(pair).collect()
    };
    let one = |(f, bins): (usize, &mut [Bin])| {
        if !allowed[f] {
            return;
        }
        let col = &x.cols[f];
        if every_row {
            let rows = col.iter().zip(grad.iter().zip(hess));
            accumulate(bins, rows.map(|(&b, (&g, &h))| (b, g, h)));
        } else {
            let rows = rows.iter().zip(&gh);
            accumulate(bins, rows.map(|(&r, &(g, h))| (col[r as usize], g, h)));
        }
    };
    let mut per_column = Vec::with_capacity(nf);
    let mut rest = buf.as_mut_slice();
    for f in 0..nf {
        let (this, tail) = rest.split_at_mut(x.offsets[f + 1] - x.offsets[f]);
        per_column.push((f, this));
        rest = tail;
    }
    if rows.len() * nf < PARALLEL_WORK {
        per_column.into_iter().for_each(one);
    } else {
        per_column.into_par_iter().for_each(one);
    }
    Hist(buf)
}

/// What a tree is grown from: per-row gradients and hessians, and the columns it may use.
#[derive(Clone, Copy)]
struct Gradients<'a> {
    grad: &'a [f32],
    hess: &'a [f32],
    allowed: &'a [bool],
}

/// Turn `parent` into the histogram of its other child by taking away `child`'s.
fn subtract_in_place(parent: &mut Hist, child: &Hist) {
    for (a, b) in parent.0.iter_mut().zip(&child.0) {
        a.g -= b.g;
        a.h -= b.h;
        a.c -= b.c;
    }
}

struct Totals {
    g: f64,
    h: f64,
    c: usize,
}

fn leaf_score(g: f64, h: f64, l2: f64) -> f64 {
    g * g / (h + l2)
}

fn best_numeric(
    f: usize,
    hist: &[Bin],
    m: &BinMapper,
    t: &Totals,
    p: &GrowParams,
) -> Option<Candidate> {
    let parent = leaf_score(t.g, t.h, p.lambda_l2);
    let mut best: Option<Candidate> = None;
    let n_bins = m.n_bins;
    let b0 = hist[0];
    let miss = (b0.g, b0.h, b0.c as usize);
    for missing_left in [false, true] {
        if missing_left && miss.2 == 0 {
            break;
        }
        let (mut gl, mut hl, mut cl) = if missing_left { miss } else { (0.0, 0.0, 0) };
        let last = n_bins.saturating_sub(1).max(1);
        for (b, bin) in hist.iter().enumerate().take(last).skip(1) {
            gl += bin.g;
            hl += bin.h;
            cl += bin.c as usize;
            if bin.c == 0 {
                continue;
            }
            let cr = t.c - cl;
            if cl < p.min_data_in_leaf {
                continue;
            }
            if cr < p.min_data_in_leaf {
                break;
            }
            let hr = t.h - hl;
            if hl < p.min_sum_hessian || hr < p.min_sum_hessian {
                continue;
            }
            let gr = t.g - gl;
            let gain = leaf_score(gl, hl, p.lambda_l2) + leaf_score(gr, hr, p.lambda_l2) - parent;
            if best.as_ref().is_none_or(|c| gain > c.gain) {
                best = Some(Candidate {
                    feature: f,
                    gain,
                    rule: Rule::Numeric {
                        bin: b as u8,
                        missing_left,
                    },
                    lg: gl,
                    lh: hl,
                });
            }
        }
    }
    best
}

fn best_categorical(f: usize, hist: &[Bin], t: &Totals, p: &GrowParams) -> Option<Candidate> {
    let used: Vec<usize> = (1..hist.len()).filter(|&b| hist[b].c > 0).collect();
    if used.len() < 2 {
        return None;
    }
    let mut best: Option<Candidate> = None;
    let consider = |set_bins: &[usize], l2: f64, best: &mut Option<Candidate>| {
        let (mut gl, mut hl, mut cl) = (0.0, 0.0, 0usize);
        for &b in set_bins {
            gl += hist[b].g;
            hl += hist[b].h;
            cl += hist[b].c as usize;
        }
        let cr = t.c - cl;
        let hr = t.h - hl;
        if cl < p.min_data_in_leaf
            || cr < p.min_data_in_leaf
            || hl < p.min_sum_hessian
            || hr < p.min_sum_hessian
        {
            return;
        }
        let gain = leaf_score(gl, hl, l2) + leaf_score(t.g - gl, hr, l2) - leaf_score(t.g, t.h, l2);
        if best.as_ref().is_none_or(|c| gain > c.gain) {
            let mut set = [0u64; 4];
            for &b in set_bins {
                set_insert(&mut set, b);
            }
            *best = Some(Candidate {
                feature: f,
                gain,
                rule: Rule::Categorical { set },
                lg: gl,
                lh: hl,
            });
        }
    };
    if used.len() <= p.max_cat_to_onehot {
        for &b in &used {
            consider(&[b], p.lambda_l2, &mut best);
        }
        return best;
    }
    let mut sorted: Vec<usize> = used
        .into_iter()
        .filter(|&b| hist[b].c as usize >= p.min_data_per_group)
        .collect();
    if sorted.len() < 2 {
        return None;
    }
    let ratio = |b: usize| hist[b].g / (hist[b].h + p.cat_smooth);
    sorted.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then(a.cmp(&b)));
    let max_left = p.max_cat_threshold.min(sorted.len() - 1).max(1);
    let l2 = p.lambda_l2 + p.cat_l2;
    for k in 1..=max_left {
        consider(&sorted[..k], l2, &mut best);
        consider(&sorted[sorted.len() - k..], l2, &mut best);
    }
    best
}

fn find_best(
    x: &BinnedMatrix,
    hist: &Hist,
    t: &Totals,
    allowed: &[bool],
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
) -> Option<Candidate> {
    let mut features: Vec<usize> = (0..x.cols.len()).filter(|&f| allowed[f]).collect();
    if let Some(k) = p.features_per_node
        && k < features.len()
    {
        let picked = sample(rng, features.len(), k);
        let mut chosen: Vec<usize> = picked.into_iter().map(|i| features[i]).collect();
        chosen.sort_unstable();
        features = chosen;
    }
    features
        .into_iter()
        .filter_map(|f| {
            if x.mappers[f].categorical {
                best_categorical(f, hist.col(x, f), t, p)
            } else {
                best_numeric(f, hist.col(x, f), &x.mappers[f], t, p)
            }
        })
        .filter(|c| c.gain > p.min_gain)
        .fold(None, |acc: Option<Candidate>, c| match acc {
            Some(a) if a.gain >= c.gain => Some(a),
            _ => Some(c),
        })
}

fn goes_left(rule: &Rule, bin: u8) -> bool {
    match rule {
        Rule::Numeric {
            bin: b,
            missing_left,
        } => {
            if bin == 0 {
                *missing_left
            } else {
                bin <= *b
            }
        }
        Rule::Categorical { set } => super::tree::set_has(set, bin),
    }
}

/// Stable partition of `idx` by the rule; returns the number going left. Large leaves are
/// cut into chunks partitioned in parallel, then the chunks' left parts and right parts are
/// put together in order.
fn partition(idx: &mut [u32], col: &[u8], rule: &Rule, scratch: &mut Vec<u32>) -> usize {
    let mut left = [0u8; SLOTS];
    for (b, l) in left.iter_mut().enumerate() {
        *l = u8::from(goes_left(rule, b as u8));
    }
    if idx.len() < PARALLEL_PARTITION {
        return partition_chunk(idx, col, &left, scratch);
    }
    let chunk = idx.len().div_ceil(rayon::current_num_threads().max(1) * 4);
    let lefts: Vec<usize> = idx
        .par_chunks_mut(chunk)
        .map_init(Vec::new, |scratch, c| {
            partition_chunk(c, col, &left, scratch)
        })
        .collect();
    scratch.clear();
    for (c, &l) in idx.chunks(chunk).zip(&lefts) {
        scratch.extend_from_slice(&c[..l]);
    }
    for (c, &l) in idx.chunks(chunk).zip(&lefts) {
        scratch.extend_from_slice(&c[l..]);
    }
    idx.copy_from_slice(scratch);
    lefts.iter().sum()
}

/// From this many rows on, a leaf is partitioned (and its gradients gathered) in parallel.
const PARALLEL_PARTITION: usize = 65_536;

/// Stable partition of one chunk, `left` saying which bins go left. Branch-free: each row is
/// written to both sides and only the side it belongs to advances (the direction of a row is
/// as good as random, so a branch on it would mispredict half the time).
fn partition_chunk(
    idx: &mut [u32],
    col: &[u8],
    left: &[u8; SLOTS],
    scratch: &mut Vec<u32>,
) -> usize {
    scratch.clear();
    scratch.resize(idx.len(), 0);
    let (mut w, mut s) = (0, 0);
    for i in 0..idx.len() {
        let r = idx[i];
        let l = left[col[r as usize] as usize] as usize;
        idx[w] = r;
        scratch[s] = r;
        w += l;
        s += 1 - l;
    }
    idx[w..].copy_from_slice(&scratch[..s]);
    w
}

/// Grow one tree over the rows in `indices` (reordered in place: each leaf's rows end up
/// contiguous). Leaf values are the Newton step `-G / (H + lambda)`, unscaled.
#[allow(clippy::too_many_arguments)]
pub(crate) fn grow(
    x: &BinnedMatrix,
    grad: &[f32],
    hess: &[f32],
    indices: &mut [u32],
    allowed: &[bool],
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
) -> Grown {
    let (g, h) = indices.iter().fold((0.0, 0.0), |(g, h), &r| {
        (g + grad[r as usize] as f64, h + hess[r as usize] as f64)
    });
    let mut pool = HistPool::default();
    let gradients = Gradients {
        grad,
        hess,
        allowed,
    };
    let every_row = indices.iter().enumerate().all(|(i, &r)| r as usize == i);
    let hist = build_hist(x, indices, every_row, &gradients, &mut pool);
    let totals = Totals {
        g,
        h,
        c: indices.len(),
    };
    let best = if indices.len() >= 2 * p.min_data_in_leaf && p.num_leaves > 1 {
        find_best(x, &hist, &totals, allowed, p, rng)
    } else {
        None
    };
    let mut leaves = vec![Leaf {
        start: 0,
        len: indices.len(),
        g,
        h,
        depth: 0,
        hist,
        best,
        slot: None,
    }];
    let mut tree = Tree::default();
    let mut scratch = Vec::new();
    while leaves.len() < p.num_leaves {
        let Some(pick) = leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.best.as_ref().map(|b| (i, b.gain)))
            .fold(None, |acc: Option<(usize, f64)>, (i, gain)| match acc {
                Some((_, g)) if g >= gain => acc,
                _ => Some((i, gain)),
            })
            .map(|(i, _)| i)
        else {
            break;
        };
        let leaf = &mut leaves[pick];
        let Some(cand) = leaf.best.take() else { break };
        let (start, len) = (leaf.start, leaf.len);
        let left_len = partition(
            &mut indices[start..start + len],
            &x.cols[cand.feature],
            &cand.rule,
            &mut scratch,
        );
        let node_idx = tree.nodes.len();
        let (threshold, missing_left, cat_set) = match &cand.rule {
            Rule::Numeric { bin, missing_left } => (
                x.mappers[cand.feature].thresholds[*bin as usize - 1],
                *missing_left,
                -1,
            ),
            Rule::Categorical { set } => {
                tree.cat_sets.push(*set);
                (
                    0.0,
                    super::tree::set_has(set, 0),
                    tree.cat_sets.len() as i32 - 1,
                )
            }
        };
        tree.nodes.push(Node {
            feature: cand.feature as u32,
            threshold,
            left: 0,
            right: 0,
            missing_left,
            cat_set,
            gain: cand.gain as f32,
            cover: leaf.h as f32,
        });
        if let Some((parent, is_left)) = leaf.slot {
            if is_left {
                tree.nodes[parent].left = node_idx as i32;
            } else {
                tree.nodes[parent].right = node_idx as i32;
            }
        }
        let depth = leaf.depth + 1;
        let mut parent_hist = std::mem::take(&mut leaf.hist);
        let (pg, ph) = (leaf.g, leaf.h);
        let left_rows = &indices[start..start + left_len];
        let right_rows = &indices[start + left_len..start + len];
        let (left_hist, right_hist) = if left_len <= len - left_len {
            let lh = build_hist(x, left_rows, false, &gradients, &mut pool);
            subtract_in_place(&mut parent_hist, &lh);
            (lh, parent_hist)
        } else {
            let rh = build_hist(x, right_rows, false, &gradients, &mut pool);
            subtract_in_place(&mut parent_hist, &rh);
            (parent_hist, rh)
        };
        let can_split =
            |n: usize| n >= 2 * p.min_data_in_leaf && (p.max_depth == 0 || depth < p.max_depth);
        let lt = Totals {
            g: cand.lg,
            h: cand.lh,
            c: left_len,
        };
        let rt = Totals {
            g: pg - cand.lg,
            h: ph - cand.lh,
            c: len - left_len,
        };
        let left_best = if can_split(lt.c) {
            find_best(x, &left_hist, &lt, allowed, p, rng)
        } else {
            None
        };
        let right_best = if can_split(rt.c) {
            find_best(x, &right_hist, &rt, allowed, p, rng)
        } else {
            None
        };
        // A leaf that cannot split never needs its histogram again.
        let keep = |best: &Option<Candidate>, h: Hist, pool: &mut HistPool| {
            if best.is_some() {
                h
            } else {
                pool.give(h);
                Hist::default()
            }
        };
        let left_hist = keep(&left_best, left_hist, &mut pool);
        let right_hist = keep(&right_best, right_hist, &mut pool);
        leaves[pick] = Leaf {
            start,
            len: left_len,
            g: lt.g,
            h: lt.h,
            depth,
            hist: left_hist,
            best: left_best,
            slot: Some((node_idx, true)),
        };
        leaves.push(Leaf {
            start: start + left_len,
            len: len - left_len,
            g: rt.g,
            h: rt.h,
            depth,
            hist: right_hist,
            best: right_best,
            slot: Some((node_idx, false)),
        });
    }
    let mut ranges = Vec::with_capacity(leaves.len());
    for (i, leaf) in leaves.iter().enumerate() {
        let value = if leaf.h + p.lambda_l2 > 0.0 {
            -leaf.g / (leaf.h + p.lambda_l2)
        } else {
            0.0
        };
        tree.leaves.push(value as f32);
        tree.leaf_cover.push(leaf.h as f32);
        ranges.push(leaf.start..leaf.start + leaf.len);
        if let Some((parent, is_left)) = leaf.slot {
            let child = !(i as i32);
            if is_left {
                tree.nodes[parent].left = child;
            } else {
                tree.nodes[parent].right = child;
            }
        }
    }
    Grown { tree, ranges }
}
