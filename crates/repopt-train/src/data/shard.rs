//! Which samples of an epoch one rank of a data-parallel run sees.
//!
//! Training (shuffled, `drop_last`): every rank draws the same permutation of the epoch from
//! the shared seed, keeps the whole global batches (`count` ranks x the per-rank batch), and
//! takes its own slice of each: rank `r`'s batch `k` is the `r`-th part of the single-process
//! batch `k`. The ranks' shards are disjoint, every rank takes the same number of steps, and
//! `count` ranks together see exactly what one process with the global batch sees, which is
//! what makes a distributed run comparable to one process step by step.
//!
//! Evaluation (in order, nothing dropped): rank `r` takes samples `r, r + count, ...`; shards
//! may differ in length by one, and their counts are summed, so every sample counts once.

/// One rank's part of each epoch: rank `index` of `count`.
///
/// ```
/// use repopt_train::data::Shard;
/// // 10 samples, per-rank batch 2, 2 ranks: global batches of 4, the last 2 samples dropped.
/// let order: Vec<usize> = (0..10).collect();
/// assert_eq!(Shard { index: 1, count: 2 }.take(&order, 2, true), vec![2, 3, 6, 7]);
/// assert_eq!(Shard { index: 1, count: 2 }.take(&order, 2, false), vec![1, 3, 5, 7, 9]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This rank, `0..count`.
    pub index: usize,
    /// Ranks sharing the data.
    pub count: usize,
}

impl Default for Shard {
    /// The whole dataset: rank 0 of 1.
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// This shard's part of an epoch's `order`, for a per-rank batch of `batch_size`.
    pub fn take(&self, order: &[usize], batch_size: usize, drop_last: bool) -> Vec<usize> {
        if self.count <= 1 {
            return order.to_vec();
        }
        if drop_last {
            let global = batch_size * self.count;
            order
                .chunks_exact(global)
                .flat_map(|g| &g[self.index * batch_size..(self.index + 1) * batch_size])
                .copied()
                .collect()
        } else {
            order
                .iter()
                .skip(self.index)
                .step_by(self.count)
                .copied()
                .collect()
        }
    }

    /// Samples of `len` that [`Shard::take`] keeps.
    pub fn len(&self, len: usize, batch_size: usize, drop_last: bool) -> usize {
        if self.count <= 1 {
            len
        } else if drop_last {
            len / (batch_size * self.count) * batch_size
        } else {
            len.saturating_sub(self.index).div_ceil(self.count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn ranks_together_see_each_global_batch_once() {
        let order: Vec<usize> = (0..23).rev().collect();
        let (b, n) = (3, 2);
        let parts: Vec<Vec<usize>> = (0..n)
            .map(|i| Shard { index: i, count: n }.take(&order, b, true))
            .collect();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.len(), Shard { index: i, count: n }.len(23, b, true));
        }
        // Global batch k of one process = rank 0's batch k then rank 1's batch k.
        for k in 0..order.len() / (b * n) {
            let joined: Vec<usize> = parts
                .iter()
                .flat_map(|p| p[k * b..(k + 1) * b].to_vec())
                .collect();
            assert_eq!(joined, order[k * b * n..(k + 1) * b * n]);
        }
    }

    #[test]
    fn evaluation_shards_cover_every_sample_once() {
        let order: Vec<usize> = (0..11).collect();
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| {
                let s = Shard { index: i, count: 3 };
                let part = s.take(&order, 4, false);
                assert_eq!(part.len(), s.len(11, 4, false));
                part
            })
            .collect();
        all.sort();
        assert_eq!(all, order);
    }
}
