//! Top talkers: sampled, weighted per-source drop counts in a bounded LRU map.

use aya_ebpf::{macros::map, maps::LruHashMap};
use guard_common::{
    Verdict,
    maps::{TOP_TALKERS_DEFAULT, TopEntry},
    parse::Source,
    ratelimit::{BucketKey, source_key},
};

/// Dropped datagrams per source. User space sets the size at load time.
#[map]
static GUARD_TOP: LruHashMap<BucketKey, TopEntry> =
    LruHashMap::with_max_entries(TOP_TALKERS_DEFAULT, 0);

/// Records one sampled drop of `bytes` from `source`, weighted by `weight` (the sampling
/// interval), so that a spoofed flood pays for a map update only once in `weight` drops.
#[inline(always)]
pub fn record(source: &Source<'_>, verdict: Verdict, bytes: u64, weight: u64) {
    let key = source_key(source);
    match GUARD_TOP.get_ptr_mut(key) {
        Some(entry) => {
            // SAFETY: a live map value; the counters are 8-byte aligned.
            unsafe {
                crate::atomic::add(&raw mut (*entry).packets, weight);
                crate::atomic::add(&raw mut (*entry).bytes, bytes * weight);
                (*entry).verdict = verdict.slot();
            }
        }
        None => {
            let entry = TopEntry {
                packets: weight,
                bytes: bytes * weight,
                verdict: verdict.slot(),
                reserved: 0,
            };
            let _ = GUARD_TOP.insert(key, entry, 0);
        }
    }
}
