//! The two atomic operations the program needs, on `u64`s in map values.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

/// Replaces `*p` with `new` if it is `old`; true on success.
///
/// # Safety
/// `p` must point to a live, 8-byte aligned map value.
#[inline(always)]
pub unsafe fn compare_exchange(p: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: as the caller promises.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(p, old, new).1
    }
}

/// Adds `n` to `*p`.
///
/// # Safety
/// `p` must point to a live, 8-byte aligned map value.
#[inline(always)]
pub unsafe fn add(p: *mut u64, n: u64) {
    // SAFETY: as the caller promises.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, n);
    }
}
