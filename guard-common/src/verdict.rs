//! Verdicts: what the guard decided about one frame, and why.

/// What the XDP program does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand the frame to the kernel stack (`XDP_PASS`).
    Pass,
    /// Discard the frame at the driver (`XDP_DROP`).
    Drop,
}

/// The reason behind a decision. Its discriminant is the frame's slot in the counters map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not UDP to a protected port (other protocols, other ports, non-IP): passes untouched.
    NotProtected = 0,
    /// UDP to a protected port from an allowlisted source: passes.
    Allowlisted = 1,
    /// UDP to a protected port from a source that is not allowlisted: dropped.
    DroppedNotAllowlisted = 2,
    /// Dry-run: a frame that would have been dropped, passed instead.
    WouldDrop = 3,
    /// Truncated or invalid headers: passed to the kernel, which discards them.
    Malformed = 4,
    /// An IPv6 extension-header chain longer than the guard walks: dropped, since padding the
    /// chain would otherwise hide a protected port from the guard.
    DroppedMalformed = 5,
    /// A non-first fragment: passed, it cannot be reassembled without its (judged) first fragment.
    FragmentPassed = 6,
    /// A first fragment too short to hold the whole UDP header (RFC 1858): dropped.
    DroppedTinyFragment = 7,
    /// Rate-limit policy: a non-allowlisted datagram within every bucket's limit: passes.
    RatePassed = 8,
    /// Rate-limit policy: a non-allowlisted datagram over a bucket's limit: dropped.
    RateLimited = 9,
    /// A source on the denylist (more specific than any allowlist match): dropped under
    /// either policy.
    Denied = 10,
}

/// Number of counter slots. Larger than the number of verdicts so that later verdicts do not
/// change the pinned map's size.
pub const COUNTER_SLOTS: u32 = 16;

/// Interfaces get counters of their own: the counters map holds `IFACE_SLOTS` blocks of
/// [`COUNTER_SLOTS`], the block chosen by `ifindex % IFACE_SLOTS` (user space warns when two
/// attached interfaces share a block).
pub const IFACE_SLOTS: u32 = 256;

/// Size of the counters map.
pub const COUNTER_ENTRIES: u32 = IFACE_SLOTS * COUNTER_SLOTS;

/// The counters-map index of `slot` for frames received on `ifindex`.
#[inline(always)]
pub const fn counter_index(ifindex: u32, slot: u32) -> u32 {
    (ifindex % IFACE_SLOTS) * COUNTER_SLOTS + slot
}

/// Counter slot of an event rather than a verdict: new rate-limit bucket entries (source or
/// prefix). Its rate is the LRU churn, which shows a spoofed flood.
pub const SLOT_BUCKET_INSERTS: u32 = 15;

impl Verdict {
    /// Every verdict, in counter-slot order.
    pub const ALL: [Verdict; 11] = [
        Verdict::NotProtected,
        Verdict::Allowlisted,
        Verdict::DroppedNotAllowlisted,
        Verdict::WouldDrop,
        Verdict::Malformed,
        Verdict::DroppedMalformed,
        Verdict::FragmentPassed,
        Verdict::DroppedTinyFragment,
        Verdict::RatePassed,
        Verdict::RateLimited,
        Verdict::Denied,
    ];

    /// What the XDP program does for this verdict.
    pub const fn action(self) -> Action {
        match self {
            Verdict::DroppedNotAllowlisted
            | Verdict::DroppedMalformed
            | Verdict::DroppedTinyFragment
            | Verdict::RateLimited
            | Verdict::Denied => Action::Drop,
            Verdict::NotProtected
            | Verdict::Allowlisted
            | Verdict::WouldDrop
            | Verdict::Malformed
            | Verdict::FragmentPassed
            | Verdict::RatePassed => Action::Pass,
        }
    }

    /// Under dry-run every drop becomes [`Verdict::WouldDrop`].
    pub const fn dry_run(self, dry_run: bool) -> Verdict {
        match (dry_run, self.action()) {
            (true, Action::Drop) => Verdict::WouldDrop,
            _ => self,
        }
    }

    /// The counter slot of this verdict.
    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// The name operators see in `guard stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::NotProtected => "not_protected",
            Verdict::Allowlisted => "allowlisted",
            Verdict::DroppedNotAllowlisted => "dropped",
            Verdict::WouldDrop => "would_drop",
            Verdict::Malformed => "malformed",
            Verdict::DroppedMalformed => "malformed_dropped",
            Verdict::FragmentPassed => "fragment_passed",
            Verdict::DroppedTinyFragment => "tiny_fragment_dropped",
            Verdict::RatePassed => "rate_passed",
            Verdict::RateLimited => "rate_limited",
            Verdict::Denied => "denied",
        }
    }
}

/// Packets and bytes seen for one verdict on one CPU (the value of the counters map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Frames.
    pub packets: u64,
    /// Bytes of those frames, from the start of the Ethernet header.
    pub bytes: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indexes_stay_in_the_map() {
        for ifindex in [0, 1, 255, 256, 257, u32::MAX] {
            for slot in 0..COUNTER_SLOTS {
                assert!(counter_index(ifindex, slot) < COUNTER_ENTRIES);
            }
        }
        assert_eq!(counter_index(1, 0), counter_index(257, 0));
        assert_ne!(counter_index(1, 0), counter_index(2, 0));
    }

    #[test]
    fn slots_are_dense_and_fit() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(v.slot() as usize, i);
            assert!(v.slot() < COUNTER_SLOTS);
            assert_ne!(v.slot(), SLOT_BUCKET_INSERTS);
        }
    }

    #[test]
    fn dry_run_turns_only_drops_into_would_drop() {
        for v in Verdict::ALL {
            let d = v.dry_run(true);
            assert_eq!(d.action(), Action::Pass);
            if v.action() == Action::Pass {
                assert_eq!(d, v);
            } else {
                assert_eq!(d, Verdict::WouldDrop);
            }
            assert_eq!(v.dry_run(false), v);
        }
    }
}
