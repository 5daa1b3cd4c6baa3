//! Rate-limit buckets in maps: `guard_common::ratelimit::Buckets` for the kernel.

use core::cell::Cell;

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, LruHashMap},
};
use guard_common::{
    maps::{PREFIX_BUCKETS_DEFAULT, SOURCE_BUCKETS_DEFAULT},
    ratelimit::{BucketKey, Buckets},
    verdict::SLOT_BUCKET_INSERTS,
};

/// Per-source buckets. User space sets the size at load time.
#[map]
static GUARD_SRC_BKT: LruHashMap<BucketKey, u64> =
    LruHashMap::with_max_entries(SOURCE_BUCKETS_DEFAULT, 0);

/// Per-prefix buckets. User space sets the size at load time.
#[map]
static GUARD_PFX_BKT: LruHashMap<BucketKey, u64> =
    LruHashMap::with_max_entries(PREFIX_BUCKETS_DEFAULT, 0);

/// The global bucket: one time shared by every CPU, changed only by compare-and-swap so that
/// the configured global rate holds however many CPUs take packets. A flood over the limit
/// only reads it, so its cache line is not bounced between CPUs; only admitted datagrams
/// (at most the global rate) write it.
#[map]
static GUARD_GLOBAL: Array<u64> = Array::with_max_entries(1, 0);

/// Buckets of one datagram. The source and prefix entries found by the lookups are kept, so
/// that committing them costs no second lookup.
pub struct MapBuckets {
    ifindex: u32,
    source: Cell<Option<*mut u64>>,
    prefix: Cell<Option<*mut u64>>,
}

impl MapBuckets {
    /// No entries looked up yet, for a frame received on `ifindex`.
    #[inline(always)]
    pub fn new(ifindex: u32) -> Self {
        Self {
            ifindex,
            source: Cell::new(None),
            prefix: Cell::new(None),
        }
    }

    #[inline(always)]
    fn write(
        &self,
        found: Option<*mut u64>,
        map: &LruHashMap<BucketKey, u64>,
        key: &BucketKey,
        tat: u64,
    ) {
        match found {
            // SAFETY: a pointer into a live map value of this program run.
            Some(p) => unsafe { *p = tat },
            None => {
                if map.insert(key, tat, 0).is_ok() {
                    crate::count_event(self.ifindex, SLOT_BUCKET_INSERTS);
                }
            }
        }
    }
}

impl Buckets for MapBuckets {
    /// `bpf_ktime_get_coarse_ns`, on purpose: about 18 ns here against 33 for
    /// `bpf_ktime_get_ns`, and the bucket arithmetic needs nanoseconds, which
    /// `bpf_jiffies64` (free, but in ticks of an HZ the program cannot learn) does not give.
    /// Its tick resolution (4 ms at HZ=250) is far finer than any burst tolerance an operator
    /// configures, and it is read only on the rate-limit path.
    #[inline(always)]
    fn now_ns(&self) -> u64 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_ktime_get_coarse_ns() }
    }

    #[inline(always)]
    fn global(&self) -> u64 {
        match GUARD_GLOBAL.get_ptr(0) {
            // SAFETY: a valid, 8-byte aligned map value.
            Some(p) => unsafe { core::ptr::read_volatile(p) },
            None => u64::MAX,
        }
    }

    #[inline(always)]
    fn commit_global(&self, old: u64, new: u64) -> bool {
        match GUARD_GLOBAL.get_ptr_mut(0) {
            // SAFETY: a valid, 8-byte aligned map value.
            Some(p) => unsafe { crate::atomic::compare_exchange(p, old, new) },
            None => false,
        }
    }

    #[inline(always)]
    fn prefix(&self, key: &BucketKey) -> Option<u64> {
        let p = GUARD_PFX_BKT.get_ptr_mut(key);
        self.prefix.set(p);
        // SAFETY: a pointer into a live map value of this program run.
        p.map(|p| unsafe { *p })
    }

    #[inline(always)]
    fn set_prefix(&self, key: &BucketKey, tat: u64) {
        self.write(self.prefix.get(), &GUARD_PFX_BKT, key, tat);
    }

    #[inline(always)]
    fn source(&self, key: &BucketKey) -> Option<u64> {
        let p = GUARD_SRC_BKT.get_ptr_mut(key);
        self.source.set(p);
        // SAFETY: a pointer into a live map value of this program run.
        p.map(|p| unsafe { *p })
    }

    #[inline(always)]
    fn set_source(&self, key: &BucketKey, tat: u64) {
        self.write(self.source.get(), &GUARD_SRC_BKT, key, tat);
    }
}
