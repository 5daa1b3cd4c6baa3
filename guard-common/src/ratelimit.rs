//! Rate limiting for sources that are not allowlisted: a hierarchy of token buckets (per
//! source, per prefix, global), each kept as GCRA's single "theoretical arrival time".
//!
//! A bucket of `rate` packets per second and `burst` packets is the pair
//! (`interval = 1 s / rate`, `tolerance = burst × interval`). Its whole state is one `u64`, the
//! time at which the bucket would be full again: small LRU entries, and a global bucket that
//! can be updated with a single compare-and-swap. A datagram conforms when, after adding one
//! interval to that time (or to now, if that time is past), it is no further ahead of now than
//! the tolerance. After an idle spell exactly `burst` datagrams pass back to back, then one per
//! interval.
//!
//! Times are compared with wrapping arithmetic, so a clock wrap or an entry written under a
//! different clock does not lock a bucket shut: a time more than 2^63 ns ahead counts as past.

use crate::parse::Source;

/// Nanoseconds in a second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// A token bucket in GCRA form.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSpec {
    /// Nanoseconds between two datagrams at the sustained rate.
    pub interval_ns: u64,
    /// How far ahead of now the bucket's time may run: `burst × interval`.
    pub tolerance_ns: u64,
}

impl RateSpec {
    /// `per_sec` datagrams per second with bursts of `burst`; `None` if either is zero or the
    /// rate exceeds one per nanosecond.
    pub const fn new(per_sec: u64, burst: u64) -> Option<Self> {
        if per_sec == 0 || burst == 0 || per_sec > NS_PER_SEC {
            return None;
        }
        let interval_ns = NS_PER_SEC / per_sec;
        match interval_ns.checked_mul(burst) {
            Some(tolerance_ns) => Some(Self {
                interval_ns,
                tolerance_ns,
            }),
            None => None,
        }
    }

    /// The sustained rate, datagrams per second.
    pub const fn per_sec(&self) -> u64 {
        match NS_PER_SEC.checked_div(self.interval_ns) {
            Some(r) => r,
            None => 0,
        }
    }

    /// The burst, datagrams.
    pub const fn burst(&self) -> u64 {
        match self.tolerance_ns.checked_div(self.interval_ns) {
            Some(b) => b,
            None => 0,
        }
    }
}

/// One bucket decision: the bucket's next time if a datagram at `now` conforms.
#[inline(always)]
pub fn conform(tat: u64, now: u64, spec: &RateSpec) -> Option<u64> {
    // How far the bucket's time runs ahead of now; a time in the past (or more than 2^63 ns
    // ahead, i.e. from before a wrap) counts as now: a full bucket.
    let ahead = tat.wrapping_sub(now);
    let ahead = if (ahead as i64) > 0 { ahead } else { 0 };
    let next = ahead.saturating_add(spec.interval_ns);
    if next > spec.tolerance_ns {
        None
    } else {
        Some(now.wrapping_add(next))
    }
}

/// The rate-limit policy, part of [`crate::GuardConfig`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RatePolicy {
    /// Per source address (IPv4 /32, IPv6 /128).
    pub source: RateSpec,
    /// Per prefix (IPv4 `prefix_v4`, IPv6 `prefix_v6`).
    pub prefix: RateSpec,
    /// One bucket for all non-allowlisted traffic on the host.
    pub global: RateSpec,
    /// Prefix length of IPv4 prefix buckets (0 to 32).
    pub prefix_v4: u32,
    /// Prefix length of IPv6 prefix buckets (0 to 128).
    pub prefix_v6: u32,
}

/// A bucket key: an IPv6 address, IPv4 mapped into `::ffff:0:0/96`.
pub type BucketKey = [u8; 16];

/// The key of a source address.
#[inline(always)]
pub fn source_key(source: &Source<'_>) -> BucketKey {
    match source {
        Source::V4(a) => [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ],
        Source::V6(a) => **a,
    }
}

/// The key of a source's prefix bucket: the key with host bits cleared.
#[inline(always)]
pub fn prefix_key(source: &Source<'_>, policy: &RatePolicy) -> BucketKey {
    let (mut key, bits) = match source {
        Source::V4(_) => (source_key(source), 96 + policy.prefix_v4.min(32)),
        Source::V6(_) => (source_key(source), policy.prefix_v6.min(128)),
    };
    let mut i = 0;
    while i < 16 {
        let start = (i * 8) as u32;
        if start >= bits {
            key[i] = 0;
        } else if start + 8 > bits {
            key[i] &= 0xFFu8 << (8 - (bits - start));
        }
        i += 1;
    }
    key
}

/// Bucket state, injected: BPF maps in the kernel, hash maps and a fake clock in host tests.
pub trait Buckets {
    /// The clock, nanoseconds.
    fn now_ns(&self) -> u64;
    /// The global bucket's time.
    fn global(&self) -> u64;
    /// Replaces the global bucket's time if it is still `old`; false when another CPU won.
    fn commit_global(&self, old: u64, new: u64) -> bool;
    /// The time of prefix bucket `key`, if it exists.
    fn prefix(&self, key: &BucketKey) -> Option<u64>;
    /// Writes prefix bucket `key` (creating it if new).
    fn set_prefix(&self, key: &BucketKey, tat: u64);
    /// The time of source bucket `key`, if it exists.
    fn source(&self, key: &BucketKey) -> Option<u64>;
    /// Writes source bucket `key` (creating it if new).
    fn set_source(&self, key: &BucketKey, tat: u64);
}

/// Judges one datagram from a non-allowlisted source: true when every bucket has room.
///
/// Checked in order global, prefix, source; state is written only when all three conform, so
/// a spoofed flood that the global bucket refuses costs one read of shared state and creates
/// no per-source or per-prefix entry. A new source gets no free datagram: it is charged to the
/// global and prefix buckets like any other.
#[inline(always)]
pub fn admit<B: Buckets + ?Sized>(buckets: &B, policy: &RatePolicy, source: &Source<'_>) -> bool {
    let now = buckets.now_ns();
    let global = buckets.global();
    let Some(global_next) = conform(global, now, &policy.global) else {
        return false;
    };
    let pkey = prefix_key(source, policy);
    let Some(prefix_next) = conform(buckets.prefix(&pkey).unwrap_or(now), now, &policy.prefix)
    else {
        return false;
    };
    let skey = source_key(source);
    let Some(source_next) = conform(buckets.source(&skey).unwrap_or(now), now, &policy.source)
    else {
        return false;
    };
    if !buckets.commit_global(global, global_next) {
        // Another CPU took the global budget first: refuse rather than overshoot.
        return false;
    }
    buckets.set_prefix(&pkey, prefix_next);
    buckets.set_source(&skey, source_next);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn run(spec: &RateSpec, tat: &mut u64, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| match conform(*tat, now, spec) {
                Some(next) => {
                    *tat = next;
                    true
                }
                None => false,
            })
            .count()
    }

    #[test]
    fn spec_from_rate_and_burst() {
        let s = RateSpec::new(100, 20).unwrap();
        assert_eq!(s.interval_ns, 10 * MS);
        assert_eq!(s.tolerance_ns, 200 * MS);
        assert_eq!((s.per_sec(), s.burst()), (100, 20));
        assert!(RateSpec::new(0, 1).is_none());
        assert!(RateSpec::new(1, 0).is_none());
        assert!(RateSpec::new(NS_PER_SEC + 1, 1).is_none());
        assert!(RateSpec::new(1, u64::MAX).is_none());
    }

    #[test]
    fn an_idle_bucket_passes_exactly_its_burst_then_refills_at_the_rate() {
        let s = RateSpec::new(100, 20).unwrap();
        let mut tat = 0;
        let t0 = 1_000_000 * MS;
        assert_eq!(run(&s, &mut tat, t0, 50), 20);
        // 10 ms later: one more datagram's worth.
        assert_eq!(run(&s, &mut tat, t0 + 10 * MS, 5), 1);
        // 9 ms later: nothing yet.
        assert_eq!(run(&s, &mut tat, t0 + 19 * MS, 5), 0);
        // 1 s later: the burst again, not more (saturation).
        assert_eq!(run(&s, &mut tat, t0 + 2_000 * MS, 100), 20);
    }

    #[test]
    fn sustained_overload_passes_the_rate() {
        let s = RateSpec::new(1000, 10).unwrap();
        let mut tat = 0;
        let t0 = 5 * NS_PER_SEC;
        let mut passed = 0;
        // 10x the rate for 3 s: one attempt every 100 us.
        for i in 0..30_000u64 {
            passed += run(&s, &mut tat, t0 + i * 100_000, 1);
        }
        assert_eq!(passed, 3000 + 10 - 1);
    }

    #[test]
    fn a_clock_jump_forward_fills_the_bucket_and_backward_only_delays() {
        let s = RateSpec::new(10, 5).unwrap();
        let mut tat = 0;
        let t0 = 100 * NS_PER_SEC;
        assert_eq!(run(&s, &mut tat, t0, 10), 5);
        // Far forward: full again, exactly the burst.
        assert_eq!(run(&s, &mut tat, t0 + 3600 * NS_PER_SEC, 10), 5);
        // Backward by a minute: refused (the bucket's time is far ahead)...
        let back = t0 + 3540 * NS_PER_SEC;
        assert_eq!(run(&s, &mut tat, back, 10), 0);
        // ...until the clock catches up.
        assert_eq!(
            run(&s, &mut tat, t0 + 3600 * NS_PER_SEC + NS_PER_SEC, 10),
            5
        );
    }

    #[test]
    fn the_clock_wrapping_around_u64_does_not_lock_the_bucket() {
        let s = RateSpec::new(10, 5).unwrap();
        let before = u64::MAX - 50 * MS;
        let mut tat = before - 10 * NS_PER_SEC;
        assert_eq!(run(&s, &mut tat, before, 10), 5);
        assert!(tat < 1_000 * MS, "the bucket's time wrapped too: {tat}");
        // 2 s later the clock has wrapped; the bucket refills as usual.
        let after = before.wrapping_add(2 * NS_PER_SEC);
        assert!(after < before);
        assert_eq!(run(&s, &mut tat, after, 10), 5);
        // A stale time from before the wrap (far "ahead" in wrapping terms) is past.
        let mut stale = u64::MAX - 10;
        assert_eq!(run(&s, &mut stale, 3 * NS_PER_SEC, 10), 5);
    }

    #[test]
    fn prefix_keys_clear_host_bits() {
        let p = RatePolicy {
            prefix_v4: 24,
            prefix_v6: 64,
            ..Default::default()
        };
        let k = prefix_key(&Source::V4(&[192, 0, 2, 77]), &p);
        assert_eq!(&k[10..], &[0xff, 0xff, 192, 0, 2, 0]);
        let mut a = [0x20u8; 16];
        a[8] = 0xab;
        let k = prefix_key(&Source::V6(&a), &p);
        assert_eq!(&k[..8], &[0x20; 8]);
        assert_eq!(&k[8..], &[0; 8]);
        let odd = RatePolicy {
            prefix_v4: 20,
            prefix_v6: 0,
            ..Default::default()
        };
        let k = prefix_key(&Source::V4(&[10, 1, 255, 255]), &odd);
        assert_eq!(&k[12..], &[10, 1, 0xf0, 0]);
        assert_eq!(prefix_key(&Source::V6(&a), &odd), [0; 16]);
    }
}
