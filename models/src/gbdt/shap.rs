//! Per-row feature contributions of tree ensembles: path-dependent TreeSHAP (Lundberg et al.,
//! "Consistent Individualized Feature Attribution for Tree Ensembles", 2018, Algorithm 2),
//! using each node's cover (sum of hessians in training) as its weight.

use super::tree::Tree;

#[derive(Debug, Clone, Copy)]
struct PathElem {
    feature: i64,
    zero: f64,
    one: f64,
    weight: f64,
}

fn extend(path: &mut Vec<PathElem>, zero: f64, one: f64, feature: i64) {
    let depth = path.len();
    path.push(PathElem {
        feature,
        zero,
        one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    });
    for i in (0..depth).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / (depth + 1) as f64;
        path[i].weight = zero * path[i].weight * (depth - i) as f64 / (depth + 1) as f64;
    }
}

fn unwind(path: &mut Vec<PathElem>, index: usize) {
    let depth = path.len() - 1;
    let (one, zero) = (path[index].one, path[index].zero);
    let mut next = path[depth].weight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next * (depth + 1) as f64 / ((i + 1) as f64 * one);
            next = tmp - path[i].weight * zero * (depth - i) as f64 / (depth + 1) as f64;
        } else {
            path[i].weight = path[i].weight * (depth + 1) as f64 / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
    path.pop();
}

fn unwound_sum(path: &[PathElem], index: usize) -> f64 {
    let depth = path.len() - 1;
    let (one, zero) = (path[index].one, path[index].zero);
    let mut next = path[depth].weight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next * (depth + 1) as f64 / ((i + 1) as f64 * one);
            total += tmp;
            next = path[i].weight - tmp * zero * (depth - i) as f64 / (depth + 1) as f64;
        } else if zero != 0.0 {
            total += path[i].weight / zero / ((depth - i) as f64 / (depth + 1) as f64);
        }
    }
    total
}

struct Walk<'a> {
    tree: &'a Tree,
    cols: &'a [Vec<f32>],
    row: usize,
    phi: &'a mut [f64],
    scale: f64,
}

impl Walk<'_> {
    fn cover(&self, child: i32) -> f64 {
        if child < 0 {
            self.tree.leaf_cover[!child as usize] as f64
        } else {
            self.tree.nodes[child as usize].cover as f64
        }
    }

    fn recurse(&mut self, node: i32, mut path: Vec<PathElem>, zero: f64, one: f64, feature: i64) {
        extend(&mut path, zero, one, feature);
        if node < 0 {
            let value = self.tree.leaves[!node as usize] as f64 * self.scale;
            for i in 1..path.len() {
                let w = unwound_sum(&path, i);
                let el = path[i];
                self.phi[el.feature as usize] += w * (el.one - el.zero) * value;
            }
            return;
        }
        let n = self.tree.nodes[node as usize];
        let x = self.cols[n.feature as usize][self.row];
        let (hot, cold) = if self.tree.goes_left(&n, x) {
            (n.left, n.right)
        } else {
            (n.right, n.left)
        };
        let w = (n.cover as f64).max(f64::MIN_POSITIVE);
        let (mut in_zero, mut in_one) = (1.0, 1.0);
        let split = n.feature as i64;
        if let Some(k) = path.iter().position(|p| p.feature == split) {
            in_zero = path[k].zero;
            in_one = path[k].one;
            unwind(&mut path, k);
        }
        let hot_zero = self.cover(hot) / w;
        let cold_zero = self.cover(cold) / w;
        self.recurse(hot, path.clone(), hot_zero * in_zero, in_one, split);
        self.recurse(cold, path, cold_zero * in_zero, 0.0, split);
    }
}

/// Expected output of a tree (leaf values weighted by cover).
pub(crate) fn expected_value(tree: &Tree) -> f64 {
    let total: f64 = tree.leaf_cover.iter().map(|&c| c as f64).sum();
    if total <= 0.0 {
        return 0.0;
    }
    tree.leaves
        .iter()
        .zip(&tree.leaf_cover)
        .map(|(&v, &c)| v as f64 * c as f64)
        .sum::<f64>()
        / total
}

/// Add `scale ×` the SHAP values of one row for one tree to `phi` (one slot per matrix
/// column). Their sum equals `scale × (leaf value − expected value)`.
pub(crate) fn add_tree_shap(
    tree: &Tree,
    cols: &[Vec<f32>],
    row: usize,
    scale: f64,
    phi: &mut [f64],
) {
    if tree.nodes.is_empty() {
        return;
    }
    let mut walk = Walk {
        tree,
        cols,
        row,
        phi,
        scale,
    };
    walk.recurse(0, Vec::with_capacity(32), 1.0, 1.0, -1);
}
