//! A trained decision tree, stored flat, and its traversal on raw feature values.

use serde::{Deserialize, Serialize};

use super::binning::cat_bin;

/// One internal node. Children `>= 0` are internal nodes, `< 0` are leaves (`!child`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// Matrix column tested.
    #[serde(rename = "f")]
    pub feature: u32,
    /// Numeric split: left when `x <= threshold`.
    #[serde(rename = "t")]
    pub threshold: f32,
    /// Left child.
    #[serde(rename = "l")]
    pub left: i32,
    /// Right child.
    #[serde(rename = "r")]
    pub right: i32,
    /// Where a missing value goes (numeric splits; categorical ones use bin 0 of the set).
    #[serde(rename = "m")]
    pub missing_left: bool,
    /// Index into [`Tree::cat_sets`] for a categorical split, `-1` for a numeric one.
    #[serde(rename = "c")]
    pub cat_set: i32,
    /// Loss reduction of the split (for importance).
    #[serde(rename = "g")]
    pub gain: f32,
    /// Sum of hessians (rows, for squared loss) that reached the node.
    #[serde(rename = "h")]
    pub cover: f32,
}

/// A decision tree.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Tree {
    /// Internal nodes; node 0 is the root (absent for a single-leaf tree).
    pub nodes: Vec<Node>,
    /// Leaf outputs.
    pub leaves: Vec<f32>,
    /// Cover of each leaf.
    pub leaf_cover: Vec<f32>,
    /// Bins going left for categorical splits (256-bit sets over category bins).
    pub cat_sets: Vec<[u64; 4]>,
}

/// Whether a 256-bit set holds `bin`.
#[inline]
pub(crate) fn set_has(set: &[u64; 4], bin: u8) -> bool {
    set[(bin >> 6) as usize] >> (bin & 63) & 1 == 1
}

impl Tree {
    /// Whether a row with value `x` at the node goes left.
    #[inline]
    pub fn goes_left(&self, node: &Node, x: f32) -> bool {
        if node.cat_set >= 0 {
            set_has(&self.cat_sets[node.cat_set as usize], cat_bin(x))
        } else if x.is_nan() {
            node.missing_left
        } else {
            x <= node.threshold
        }
    }

    /// Leaf index reached by row `row` of the column-major matrix `cols`.
    #[inline]
    pub fn leaf_of(&self, cols: &[Vec<f32>], row: usize) -> usize {
        if self.nodes.is_empty() {
            return 0;
        }
        let mut i = 0i32;
        while i >= 0 {
            let n = &self.nodes[i as usize];
            let x = cols[n.feature as usize][row];
            i = if self.goes_left(n, x) {
                n.left
            } else {
                n.right
            };
        }
        !i as usize
    }

    /// Add `scale * leaf value` of each row in `rows` to `out[k * stride + offset]` for row k.
    pub(crate) fn add_to(
        &self,
        cols: &[Vec<f32>],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        stride: usize,
        offset: usize,
        scale: f32,
    ) {
        let start = rows.start;
        for r in rows {
            let v = self.leaves[self.leaf_of(cols, r)];
            out[(r - start) * stride + offset] += scale * v;
        }
    }

    /// Depth of the deepest leaf.
    pub fn depth(&self) -> usize {
        fn walk(t: &Tree, i: i32) -> usize {
            if i < 0 {
                0
            } else {
                let n = &t.nodes[i as usize];
                1 + walk(t, n.left).max(walk(t, n.right))
            }
        }
        if self.nodes.is_empty() {
            0
        } else {
            walk(self, 0)
        }
    }
}
