//! The CPU path of the tensor commands: plain, cache-friendly loops on scoped threads.
//!
//! Used when the node has no GPU, for sizes too small to be worth a transfer, and as the
//! reference the GPU results are compared with in tests.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Rows of C computed per work item; each item checks for cancellation first.
const ROW_BLOCK: usize = 16;

/// `C = A * B` with A `m x k`, B `k x n`, C `m x n`, all row-major. `keep_going(done_rows)` is
/// asked before each block of rows: returning false stops the work (the result is then
/// incomplete and the caller discards it). Returns C, or `None` when stopped.
pub fn matmul(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    keep_going: &(dyn Fn(usize) -> bool + Sync),
) -> Option<Vec<f32>> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "matmul shape mismatch"
    );
    let mut c = vec![0.0f32; m * n];
    if m == 0 || n == 0 {
        return Some(c);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(m.div_ceil(ROW_BLOCK));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stopped = std::sync::atomic::AtomicBool::new(false);
    // Hand out disjoint row blocks of C; every thread takes the next free one.
    let blocks: Vec<(usize, &mut [f32])> = c
        .chunks_mut(ROW_BLOCK * n)
        .enumerate()
        .map(|(i, rows)| (i * ROW_BLOCK, rows))
        .collect();
    type Slot<'c> = std::sync::Mutex<Option<(usize, &'c mut [f32])>>;
    let blocks: Vec<Slot<'_>> = blocks
        .into_iter()
        .map(|b| std::sync::Mutex::new(Some(b)))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = blocks.get(index) else { break };
                if stopped.load(Ordering::Relaxed) || !keep_going(done.load(Ordering::Relaxed)) {
                    stopped.store(true, Ordering::Relaxed);
                    break;
                }
                let taken = slot.lock().ok().and_then(|mut s| s.take());
                let Some((row0, rows)) = taken else { continue };
                for (r, c_row) in rows.chunks_mut(n).enumerate() {
                    let a_row = &a[(row0 + r) * k..(row0 + r + 1) * k];
                    for (p, &a_ip) in a_row.iter().enumerate() {
                        let b_row = &b[p * n..(p + 1) * n];
                        for (c_ij, &b_pj) in c_row.iter_mut().zip(b_row) {
                            *c_ij += a_ip * b_pj;
                        }
                    }
                }
                done.fetch_add(rows.len() / n, Ordering::Relaxed);
            });
        }
    });
    drop(blocks);
    (!stopped.load(Ordering::Relaxed)).then_some(c)
}

/// The textbook triple loop, accumulated in f64: the reference the fast paths are checked with.
pub fn matmul_reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f64;
            for p in 0..k {
                sum += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
            }
            c[i * n + j] = sum;
        }
    }
    c
}

/// `y = alpha * x + y`.
pub fn saxpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = alpha.mul_add(x, *y);
    }
}

/// Sum in f64 (exact enough to be the reference for an f32 GPU tree sum).
pub fn sum(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v)).sum()
}

/// The largest element; `None` for an empty input. NaN propagates (any NaN gives NaN).
pub fn max(x: &[f32]) -> Option<f32> {
    let mut it = x.iter().copied();
    let first = it.next()?;
    Some(it.fold(first, |m, v| {
        if m.is_nan() || v.is_nan() {
            f32::NAN
        } else {
            m.max(v)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_stops_when_told() {
        let a = vec![1.0; 64 * 8];
        let b = vec![1.0; 8 * 4];
        assert!(matmul(&a, &b, 64, 4, 8, &|_| false).is_none());
        let c = matmul(&a, &b, 64, 4, 8, &|_| true).unwrap();
        assert!(c.iter().all(|&v| v == 8.0));
    }

    #[test]
    fn max_propagates_nan_and_handles_empty() {
        assert_eq!(max(&[]), None);
        assert_eq!(max(&[-3.0, -1.0, -2.0]), Some(-1.0));
        assert!(max(&[1.0, f32::NAN, 2.0]).unwrap().is_nan());
    }
}
