//! Scoring layout of a tree: what `PREDICT` runs, built from a [`Tree`] when an ensemble
//! scores a batch.
//!
//! Walking a [`Tree`] node by node costs a mispredicted branch at about every second level
//! (left or right depends on the data) plus the NaN and categorical checks, and each row's
//! walk is one chain of dependent loads. [`ScoringTree`] instead stores 16-byte nodes
//! (feature with the missing-value direction and the split kind in its top bits, threshold
//! or category-set index, both children), turns every leaf into a node whose children are
//! itself, and walks [`LANES`] rows together for exactly the tree's depth: the child is
//! chosen by indexing, not branching, and the rows' independent load chains overlap. Shallow
//! leaves cost the steps left to the full depth, far less than the mispredictions saved. The
//! only branch left per node is numeric-or-categorical, which follows the tree's shape rather
//! than the data (never taken in a tree without categorical splits).

use super::binning::cat_bin;
use super::tree::{Tree, set_has};

/// Rows walked together.
const LANES: usize = 8;
/// Bit of [`Node::feature`] that sends a missing (NaN) value right (numeric splits).
const NAN_RIGHT: u32 = 1 << 31;
/// Bit of [`Node::feature`] that marks a categorical split: `threshold` then holds the bits
/// of the index of its set in [`Tree::cat_sets`] (bins in the set go left).
const CATEGORICAL: u32 = 1 << 30;
/// The column index inside [`Node::feature`].
const COLUMN: u32 = !(NAN_RIGHT | CATEGORICAL);

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Node {
    /// Column index, with [`NAN_RIGHT`].
    feature: u32,
    /// Right when `x > threshold`; leaves have `+inf` (never right). For a categorical
    /// split, the set index as bits.
    threshold: f32,
    /// Left and right child (node indices; a leaf's are itself).
    children: [u32; 2],
}

/// A tree in the scoring layout (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct ScoringTree {
    nodes: Vec<Node>,
    /// Index of the first leaf node (leaf `j` is node `first_leaf + j`).
    first_leaf: u32,
    /// Steps from the root to the deepest leaf.
    depth: usize,
}

impl ScoringTree {
    /// The scoring layout of `tree`, or `None` when it has no split (or indices too large
    /// for the layout).
    pub(crate) fn new(tree: &Tree) -> Option<ScoringTree> {
        if tree.nodes.is_empty() {
            return None;
        }
        let first_leaf = u32::try_from(tree.nodes.len()).ok()?;
        let child = |c: i32| -> Option<u32> {
            if c >= 0 {
                u32::try_from(c).ok()
            } else {
                first_leaf.checked_add(u32::try_from(!c).ok()?)
            }
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len() + tree.leaves.len());
        for n in &tree.nodes {
            if n.feature & !COLUMN != 0 {
                return None;
            }
            let (feature, threshold) = if n.cat_set >= 0 {
                let set = u32::try_from(n.cat_set).ok()?;
                if set as usize >= tree.cat_sets.len() {
                    return None;
                }
                (n.feature | CATEGORICAL, f32::from_bits(set))
            } else if n.missing_left {
                (n.feature, n.threshold)
            } else {
                (n.feature | NAN_RIGHT, n.threshold)
            };
            nodes.push(Node {
                feature,
                threshold,
                children: [child(n.left)?, child(n.right)?],
            });
        }
        for j in 0..tree.leaves.len() {
            let me = first_leaf.checked_add(u32::try_from(j).ok()?)?;
            nodes.push(Node {
                feature: 0,
                threshold: f32::INFINITY,
                children: [me, me],
            });
        }
        if nodes
            .iter()
            .any(|n| n.children.iter().any(|&c| c as usize >= nodes.len()))
        {
            return None;
        }
        Some(ScoringTree {
            nodes,
            first_leaf,
            depth: tree.depth(),
        })
    }

    /// [`ScoringTree::add_to`] over rows already laid out row by row: `block` holds
    /// `width` values per row (one per matrix column), so a node reads one value with one
    /// load. An ensemble lays out each block of rows once for all its trees.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_rows_to(
        &self,
        tree: &Tree,
        block: &[f32],
        width: usize,
        out: &mut [f32],
        stride: usize,
        offset: usize,
        scale: f32,
    ) {
        let rows = block.len() / width.max(1);
        let value = |row: usize, column: usize| block[row * width + column];
        self.add(tree, rows, value, out, stride, offset, scale);
    }

    /// Add `scale * leaf value` of each row in `rows` to `out[k * stride + offset]` for row k
    /// (as [`Tree`]'s own scoring does).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_to(
        &self,
        tree: &Tree,
        cols: &[Vec<f32>],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        stride: usize,
        offset: usize,
        scale: f32,
    ) {
        let start = rows.start;
        let value = |row: usize, column: usize| cols[column][start + row];
        self.add(tree, rows.len(), value, out, stride, offset, scale);
    }

    /// The walk both layouts share: `value(row, column)` for rows `0..rows`, results to
    /// `out[row * stride + offset]`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn add(
        &self,
        tree: &Tree,
        rows: usize,
        value: impl Fn(usize, usize) -> f32,
        out: &mut [f32],
        stride: usize,
        offset: usize,
        scale: f32,
    ) {
        // A tree without categorical splits is walked by code without their check.
        if tree.cat_sets.is_empty() {
            self.walk::<false>(tree, rows, value, out, stride, offset, scale)
        } else {
            self.walk::<true>(tree, rows, value, out, stride, offset, scale)
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn walk<const CATEGORICAL_SPLITS: bool>(
        &self,
        tree: &Tree,
        rows: usize,
        value: impl Fn(usize, usize) -> f32,
        out: &mut [f32],
        stride: usize,
        offset: usize,
        scale: f32,
    ) {
        let mut r = 0;
        while r < rows {
            let lanes = (rows - r).min(LANES);
            let mut idx = [0u32; LANES];
            for _ in 0..self.depth {
                for (l, i) in idx.iter_mut().enumerate().take(lanes) {
                    let n = &self.nodes[*i as usize];
                    let x = value(r + l, (n.feature & COLUMN) as usize);
                    let right = goes_right::<CATEGORICAL_SPLITS>(tree, n, x);
                    *i = n.children[usize::from(right)];
                }
            }
            for (l, i) in idx.iter().enumerate().take(lanes) {
                let leaf = (*i - self.first_leaf) as usize;
                out[(r + l) * stride + offset] += scale * tree.leaves[leaf];
            }
            r += lanes;
        }
    }
}

/// Whether value `x` goes right at `n` (as [`Tree::goes_left`] decides, negated);
/// `CATEGORICAL_SPLITS` false when the tree has none (no check is compiled in).
#[inline(always)]
fn goes_right<const CATEGORICAL_SPLITS: bool>(tree: &Tree, n: &Node, x: f32) -> bool {
    if CATEGORICAL_SPLITS && n.feature & CATEGORICAL != 0 {
        let set = &tree.cat_sets[n.threshold.to_bits() as usize];
        !set_has(set, cat_bin(x))
    } else {
        (x > n.threshold) | (x.is_nan() & (n.feature & NAN_RIGHT != 0))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gbdt::tree::Node as TreeNode;

    /// A random tree over `features` columns with `leaves` leaves (lopsided or balanced as
    /// chance has it), with some categorical splits when `categorical`.
    pub(crate) fn random_tree(
        rng: &mut ChaCha8Rng,
        features: u32,
        leaves: usize,
        categorical: bool,
    ) -> Tree {
        let mut tree = Tree {
            leaves: vec![0.0],
            leaf_cover: vec![1.0],
            ..Tree::default()
        };
        // Split a random leaf until there are enough: each split turns leaf `j` into a node.
        let mut parent_of_leaf: Vec<Option<(usize, bool)>> = vec![None];
        while tree.leaves.len() < leaves {
            let j = rng.random_range(0..tree.leaves.len());
            let node = tree.nodes.len() as i32;
            let new_leaf = tree.leaves.len();
            let cat_set = if categorical && rng.random_bool(0.3) {
                tree.cat_sets
                    .push([rng.random(), rng.random(), rng.random(), rng.random()]);
                tree.cat_sets.len() as i32 - 1
            } else {
                -1
            };
            tree.nodes.push(TreeNode {
                feature: rng.random_range(0..features),
                threshold: rng.random_range(-2.0..2.0),
                left: !(j as i32),
                right: !(new_leaf as i32),
                missing_left: rng.random_bool(0.5),
                cat_set,
                gain: 1.0,
                cover: 1.0,
            });
            match parent_of_leaf[j] {
                Some((p, true)) => tree.nodes[p].left = node,
                Some((p, false)) => tree.nodes[p].right = node,
                None => {}
            }
            parent_of_leaf[j] = Some((node as usize, true));
            parent_of_leaf.push(Some((node as usize, false)));
            tree.leaves.push(0.0);
            tree.leaf_cover.push(1.0);
        }
        // The first split's node (0) is the root: later ones replace leaves below it.
        for v in &mut tree.leaves {
            *v = rng.random_range(-1.0..1.0);
        }
        tree
    }

    /// `features` columns of `rows` values: numbers around the thresholds, NaN, infinities
    /// and category codes (some past the bins of their own).
    pub(crate) fn random_cols(rng: &mut ChaCha8Rng, features: u32, rows: usize) -> Vec<Vec<f32>> {
        (0..features)
            .map(|_| {
                (0..rows)
                    .map(|_| match rng.random_range(0..20) {
                        0 => f32::NAN,
                        1 => f32::INFINITY,
                        2 => f32::NEG_INFINITY,
                        3..=8 => rng.random_range(0..300) as f32,
                        _ => rng.random_range(-3.0..3.0),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn scores_exactly_as_the_node_walk_numeric_and_categorical() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for case in 0..200 {
            let features = rng.random_range(1..6);
            let leaves = rng.random_range(2..40);
            let tree = random_tree(&mut rng, features, leaves, case % 2 == 1);
            let scorer = ScoringTree::new(&tree).expect("scoring layout");
            let rows = rng.random_range(1..70);
            let cols = random_cols(&mut rng, features, rows);
            let start = rng.random_range(0..rows);
            let (mut want, mut got) = (
                vec![0.5f32; 2 * (rows - start)],
                vec![0.5f32; 2 * (rows - start)],
            );
            tree.add_to(&cols, start..rows, &mut want, 2, 1, 0.25);
            scorer.add_to(&tree, &cols, start..rows, &mut got, 2, 1, 0.25);
            assert_eq!(got, want, "case {case}");
            // The same rows laid out row by row.
            let width = features as usize;
            let block: Vec<f32> = (start..rows)
                .flat_map(|r| cols.iter().map(move |c| c[r]))
                .collect();
            let mut by_rows = vec![0.5f32; 2 * (rows - start)];
            scorer.add_rows_to(&tree, &block, width, &mut by_rows, 2, 1, 0.25);
            assert_eq!(by_rows, want, "case {case}, row layout");
        }
    }

    #[test]
    fn a_single_leaf_tree_keeps_the_node_walk() {
        let leaf_only = Tree {
            leaves: vec![1.0],
            leaf_cover: vec![1.0],
            ..Tree::default()
        };
        assert!(ScoringTree::new(&leaf_only).is_none());
    }
}
