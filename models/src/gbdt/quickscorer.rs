//! QuickScorer: an ensemble scored feature by feature with leaf bit vectors instead of tree
//! by tree, node by node.
//!
//! Lucchese et al., "QuickScorer: a fast algorithm to rank documents with additive ensembles
//! of regression trees" (SIGIR 2015). Each tree keeps one bit per leaf, numbered left to
//! right, all set at the start of a row. A node whose test sends the row right rules out
//! every leaf of its left subtree: its mask clears those bits. The row's exit leaf is then
//! the leftmost leaf still set (the lowest set bit), whatever order the nodes are visited
//! in. So the nodes of all trees are grouped by feature and sorted by threshold: for value
//! `x` the nodes that send it right (`x > threshold`) are exactly a prefix of that list,
//! found by a binary search, and a row costs one AND per node that sends it right — no
//! dependent chain of loads from the root down and no mispredicted branch per level, which
//! is what a node walk pays (see [`super::scorer`]). Rows are scored in small blocks
//! feature by feature, so a feature's list stays in cache across the block. On the
//! 300-tree × 31-leaf benchmark ensemble this is what takes in-query scoring past LLVM-
//! compiled trees (benches/README.md, "PREDICT at compiled-tree speed").
//!
//! Written here rather than taken from a crate: no maintained Rust crate implements it, and
//! it must follow prognos's own split semantics (missing-value direction per node, category
//! sets) exactly.
//!
//! Missing values: `threshold < NaN` is false, so a NaN sends every numeric node left; the
//! nodes that send a missing value right are kept in a second list per feature. Categorical
//! nodes (set membership) cannot be sorted: each is tested on every row, one membership
//! check per node, in a third list per feature.

use std::ops::{BitAnd, BitAndAssign, BitOr, Not};

use super::binning::cat_bin;
use super::tree::{Tree, set_has};

/// One bit per leaf of a tree: `u32` for trees of up to 32 leaves (half the memory per
/// row), `u64` up to 64.
pub(crate) trait LeafBits:
    Copy
    + BitAnd<Output = Self>
    + BitAndAssign
    + BitOr<Output = Self>
    + Not<Output = Self>
    + std::fmt::Debug
    + Send
    + Sync
{
    /// Every leaf.
    const ALL: Self;
    /// How many leaves fit.
    const WIDTH: u32;
    /// The bit of leaf `i` (`i < WIDTH`).
    fn bit(i: u32) -> Self;
    /// The lowest set bit's position: the exit leaf.
    fn first(self) -> u32;
}

macro_rules! leaf_bits {
    ($($t:ty),*) => {$(
        impl LeafBits for $t {
            const ALL: Self = <$t>::MAX;
            const WIDTH: u32 = <$t>::BITS;
            fn bit(i: u32) -> Self {
                1 << i
            }
            fn first(self) -> u32 {
                self.trailing_zeros()
            }
        }
    )*};
}

leaf_bits!(u32, u64);

/// A node's effect: clear `mask` in the bits of `tree`.
#[derive(Debug, Clone, Copy)]
struct Clear<M> {
    tree: u32,
    mask: M,
}

/// A categorical node: rows whose category bin is outside `set` apply `clear`.
#[derive(Debug, Clone)]
struct CategoryClear<M> {
    clear: Clear<M>,
    set: [u64; 4],
}

/// The nodes of one feature, in the three lists the module docs describe.
#[derive(Debug, Clone)]
struct FeatureNodes<M> {
    /// Thresholds of the numeric nodes, ascending.
    thresholds: Vec<f32>,
    /// The numeric nodes, in the order of `thresholds`.
    numeric: Vec<Clear<M>>,
    /// Numeric nodes that send a missing value right.
    nan_right: Vec<Clear<M>>,
    /// Categorical nodes.
    categorical: Vec<CategoryClear<M>>,
}

/// An ensemble in QuickScorer form with `M` bits per tree.
#[derive(Debug, Clone)]
pub(crate) struct Form<M> {
    features: Vec<FeatureNodes<M>>,
    /// Leaf values of every tree, each tree's left to right.
    leaf_values: Vec<f32>,
    /// Where each tree's leaves start in `leaf_values`.
    leaf_offsets: Vec<u32>,
}

/// An ensemble in QuickScorer form (see the module docs).
#[derive(Debug, Clone)]
pub(crate) enum QuickScorer {
    /// Every tree has at most 32 leaves.
    Narrow(Form<u32>),
    /// Every tree has at most 64 leaves.
    Wide(Form<u64>),
}

/// Bytes of leaf bits a block of rows may hold (most of a core's L1 data cache).
const BLOCK_BITS_BYTES: usize = 32 * 1024;

impl QuickScorer {
    /// The QuickScorer form of `trees` over `n_features` matrix columns, or `None` when a
    /// tree has more than 64 leaves, a NaN threshold, a node on a column past
    /// `n_features`, or is malformed (the node walk then scores it).
    pub(crate) fn new(trees: &[Tree], n_features: usize) -> Option<QuickScorer> {
        let most = trees.iter().map(|t| t.leaves.len()).max()?;
        if most <= 32 {
            Form::new(trees, n_features).map(QuickScorer::Narrow)
        } else {
            Form::new(trees, n_features).map(QuickScorer::Wide)
        }
    }

    /// Add `scale * leaf value` of every tree to `out[k * stride + t % stride]` for each row
    /// k in `rows` of the column-major `cols` (tree `t` feeds output `t % stride`), adding
    /// tree by tree in tree order as the node walk does, so the sums are the same.
    pub(crate) fn add_to(
        &self,
        cols: &[Vec<f32>],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        stride: usize,
        scale: f32,
    ) {
        match self {
            QuickScorer::Narrow(f) => f.add_to(cols, rows, out, stride, scale),
            QuickScorer::Wide(f) => f.add_to(cols, rows, out, stride, scale),
        }
    }
}

impl<M: LeafBits> Form<M> {
    fn new(trees: &[Tree], n_features: usize) -> Option<Form<M>> {
        let mut features = vec![
            FeatureNodes {
                thresholds: Vec::new(),
                numeric: Vec::new(),
                nan_right: Vec::new(),
                categorical: Vec::new(),
            };
            n_features
        ];
        // Numeric nodes per feature before sorting: (threshold, node).
        let mut numeric: Vec<Vec<(f32, Clear<M>)>> = vec![Vec::new(); n_features];
        let mut leaf_values = Vec::new();
        let mut leaf_offsets = Vec::with_capacity(trees.len());
        for (t, tree) in trees.iter().enumerate() {
            if tree.leaves.is_empty() || tree.leaves.len() > M::WIDTH as usize {
                return None;
            }
            leaf_offsets.push(u32::try_from(leaf_values.len()).ok()?);
            let tree_id = u32::try_from(t).ok()?;
            if tree.nodes.is_empty() {
                leaf_values.push(tree.leaves[0]);
                continue;
            }
            let mut order = LeafOrder {
                tree,
                next: 0,
                values: Vec::with_capacity(tree.leaves.len()),
                visited: 0,
            };
            order.visit(0, &mut |node, left_leaves: M| {
                let n = &tree.nodes[node];
                let column = n.feature as usize;
                let nodes = features.get_mut(column)?;
                let clear = Clear {
                    tree: tree_id,
                    mask: !left_leaves,
                };
                if n.cat_set >= 0 {
                    let set = *tree.cat_sets.get(usize::try_from(n.cat_set).ok()?)?;
                    nodes.categorical.push(CategoryClear { clear, set });
                } else {
                    if n.threshold.is_nan() {
                        return None;
                    }
                    numeric[column].push((n.threshold, clear));
                    if !n.missing_left {
                        nodes.nan_right.push(clear);
                    }
                }
                Some(())
            })?;
            if order.values.len() != tree.leaves.len() || order.visited != tree.nodes.len() {
                return None;
            }
            leaf_values.extend(order.values);
        }
        for (nodes, mut list) in features.iter_mut().zip(numeric) {
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            nodes.thresholds = list.iter().map(|(t, _)| *t).collect();
            nodes.numeric = list.into_iter().map(|(_, c)| c).collect();
        }
        Some(Form {
            features,
            leaf_values,
            leaf_offsets,
        })
    }

    fn add_to(
        &self,
        cols: &[Vec<f32>],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        stride: usize,
        scale: f32,
    ) {
        let n_trees = self.leaf_offsets.len();
        if n_trees == 0 || stride == 0 {
            return;
        }
        let block = (BLOCK_BITS_BYTES / (n_trees * size_of::<M>())).clamp(1, 64);
        let mut bits = vec![M::ALL; n_trees * block];
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + block).min(rows.end);
            let bits = &mut bits[..(end - start) * n_trees];
            bits.fill(M::ALL);
            for (nodes, col) in self.features.iter().zip(cols) {
                for (row_bits, &x) in bits.chunks_mut(n_trees).zip(&col[start..end]) {
                    nodes.clear(row_bits, x);
                }
            }
            let first = start - rows.start;
            let block_out = &mut out[first * stride..(end - rows.start) * stride];
            for (row_bits, row_out) in bits.chunks(n_trees).zip(block_out.chunks_mut(stride)) {
                self.add_leaves(row_bits, row_out, scale);
            }
            start = end;
        }
    }

    /// Add each tree's exit leaf (from its bits) to the row's outputs, tree `t` to output
    /// `t % outputs`, in tree order.
    #[inline]
    fn add_leaves(&self, row_bits: &[M], row_out: &mut [f32], scale: f32) {
        let leaf =
            |(b, offset): (&M, &u32)| self.leaf_values[*offset as usize + b.first() as usize];
        let leaves = row_bits.iter().zip(&self.leaf_offsets).map(leaf);
        if let [single] = row_out {
            // One output: accumulate in a register, in the same order.
            *single = leaves.fold(*single, |acc, v| acc + scale * v);
        } else {
            for (v, o) in leaves.zip((0..row_out.len()).cycle()) {
                row_out[o] += scale * v;
            }
        }
    }
}

impl<M: LeafBits> FeatureNodes<M> {
    /// Clear, in one row's bits, the leaves that this feature's nodes rule out for value
    /// `x`.
    #[inline]
    fn clear(&self, row_bits: &mut [M], x: f32) {
        let right = self.thresholds.partition_point(|t| *t < x);
        for c in &self.numeric[..right] {
            row_bits[c.tree as usize] &= c.mask;
        }
        if x.is_nan() {
            for c in &self.nan_right {
                row_bits[c.tree as usize] &= c.mask;
            }
        }
        if !self.categorical.is_empty() {
            let bin = cat_bin(x);
            for c in &self.categorical {
                if !set_has(&c.set, bin) {
                    row_bits[c.clear.tree as usize] &= c.clear.mask;
                }
            }
        }
    }
}

/// An in-order walk of a tree that numbers its leaves left to right.
struct LeafOrder<'a> {
    tree: &'a Tree,
    /// Position of the next leaf met.
    next: u32,
    /// Leaf values in the order met.
    values: Vec<f32>,
    /// Internal nodes met (differs from the node count in a malformed tree).
    visited: usize,
}

impl LeafOrder<'_> {
    /// Visit `child`, calling `on_node(node, bits of its left subtree's leaves)` for every
    /// internal node below. Returns the bits of the leaves below `child`, or `None` on a
    /// malformed tree (or when `on_node` refuses).
    fn visit<M: LeafBits>(
        &mut self,
        child: i32,
        on_node: &mut impl FnMut(usize, M) -> Option<()>,
    ) -> Option<M> {
        if child < 0 {
            let leaf = usize::try_from(!child).ok()?;
            self.values.push(*self.tree.leaves.get(leaf)?);
            if self.next >= M::WIDTH {
                return None;
            }
            let bit = M::bit(self.next);
            self.next += 1;
            return Some(bit);
        }
        let node = usize::try_from(child).ok()?;
        let n = *self.tree.nodes.get(node)?;
        self.visited += 1;
        // More visits than nodes: a node is reached twice (a cycle or a shared child).
        if self.visited > self.tree.nodes.len() {
            return None;
        }
        let left = self.visit(n.left, on_node)?;
        let right = self.visit(n.right, on_node)?;
        on_node(node, left)?;
        Some(left | right)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gbdt::scorer::tests::{random_cols, random_tree};

    #[test]
    fn scores_exactly_as_the_node_walk_numeric_and_categorical() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for case in 0..200 {
            let features = rng.random_range(1..6);
            let n_trees = rng.random_range(1..12);
            let stride = rng.random_range(1..4);
            // Half the cases fit 32 bits per tree, half need 64.
            let most = if case % 4 < 2 { 32 } else { 64 };
            let trees: Vec<Tree> = (0..n_trees)
                .map(|_| {
                    let leaves = rng.random_range(1..=most);
                    random_tree(&mut rng, features, leaves, case % 2 == 1)
                })
                .collect();
            let qs = QuickScorer::new(&trees, features as usize).expect("quickscorer form");
            // More rows than a block holds, sometimes.
            let rows = rng.random_range(1..200);
            let mut cols = random_cols(&mut rng, features, rows);
            // Some values exactly on a threshold of their column (which goes left).
            for (f, col) in cols.iter_mut().enumerate() {
                let on_column: Vec<f32> = trees
                    .iter()
                    .flat_map(|t| &t.nodes)
                    .filter(|n| n.feature as usize == f && n.cat_set < 0)
                    .map(|n| n.threshold)
                    .collect();
                for v in col.iter_mut() {
                    if !on_column.is_empty() && rng.random_bool(0.2) {
                        *v = on_column[rng.random_range(0..on_column.len())];
                    }
                }
            }
            let start = rng.random_range(0..rows);
            let n = rows - start;
            let mut want = vec![0.5f32; stride * n];
            for (t, tree) in trees.iter().enumerate() {
                tree.add_to(&cols, start..rows, &mut want, stride, t % stride, 0.25);
            }
            let mut got = vec![0.5f32; stride * n];
            qs.add_to(&cols, start..rows, &mut got, stride, 0.25);
            assert_eq!(got, want, "case {case}");
        }
    }

    #[test]
    fn more_than_64_leaves_a_nan_threshold_or_a_missing_column_is_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let big = random_tree(&mut rng, 3, 65, false);
        assert!(QuickScorer::new(&[big], 3).is_none());
        let mut nan = random_tree(&mut rng, 3, 5, false);
        nan.nodes[0].threshold = f32::NAN;
        assert!(QuickScorer::new(&[nan], 3).is_none());
        let narrow = random_tree(&mut rng, 3, 5, false);
        assert!(matches!(
            QuickScorer::new(std::slice::from_ref(&narrow), 3),
            Some(QuickScorer::Narrow(_))
        ));
        assert!(QuickScorer::new(&[narrow], 0).is_none());
        let wide = random_tree(&mut rng, 3, 33, false);
        assert!(matches!(
            QuickScorer::new(&[wide], 3),
            Some(QuickScorer::Wide(_))
        ));
    }
}
