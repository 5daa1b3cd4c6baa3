//! The classifier on arbitrary frames and configurations: it must never panic (the XDP build
//! would be rejected by the verifier, the host model would crash), and its verdict must keep
//! the policy's invariants.
#![no_main]

use std::cell::Cell;

use guard_common::{
    Action, GuardConfig, Lists, Match, Verdict, classify, matched,
    config::POLICY_RATE_LIMIT,
    ratelimit::{BucketKey, Buckets, RateSpec},
};
use libfuzzer_sys::fuzz_target;

/// Lists driven by the input: every address matches a prefix of a fixed length, or none.
struct FixedLists {
    allow: Option<u32>,
    deny: Option<u32>,
}

impl Lists for FixedLists {
    fn allow_v4(&self, _: &[u8; 4]) -> Match {
        self.allow.map_or(0, |l| matched(l % 33))
    }
    fn allow_v6(&self, _: &[u8; 16]) -> Match {
        self.allow.map_or(0, |l| matched(l % 129))
    }
    fn deny_v4(&self, _: &[u8; 4]) -> Match {
        self.deny.map_or(0, |l| matched(l % 33))
    }
    fn deny_v6(&self, _: &[u8; 16]) -> Match {
        self.deny.map_or(0, |l| matched(l % 129))
    }
}

/// Buckets whose stored times come from the input.
struct FuzzBuckets {
    now: u64,
    global: Cell<u64>,
    stored: u64,
}

impl Buckets for FuzzBuckets {
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn global(&self) -> u64 {
        self.global.get()
    }
    fn commit_global(&self, old: u64, new: u64) -> bool {
        let ok = self.global.get() == old;
        if ok {
            self.global.set(new);
        }
        ok
    }
    fn prefix(&self, _: &BucketKey) -> Option<u64> {
        (self.stored & 1 == 1).then_some(self.stored)
    }
    fn set_prefix(&self, _: &BucketKey, _: u64) {}
    fn source(&self, _: &BucketKey) -> Option<u64> {
        (self.stored & 2 == 2).then_some(self.stored.rotate_left(7))
    }
    fn set_source(&self, _: &BucketKey, _: u64) {}
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let (head, frame) = data.split_at(24);
    let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap());
    let mut config = GuardConfig::EMPTY;
    config.protect(u16::from_le_bytes([head[0], head[1]]));
    config.protect(11211);
    config.set_dry_run(head[2] & 1 == 1);
    config.set_has_deny(head[2] & 2 == 2);
    if head[2] & 4 == 4 {
        config.policy = POLICY_RATE_LIMIT;
        let spec = |x: u8| RateSpec::new(u64::from(x) + 1, u64::from(x % 7) + 1).unwrap();
        config.rate.source = spec(head[3]);
        config.rate.prefix = spec(head[4]);
        config.rate.global = spec(head[5]);
        config.rate.prefix_v4 = u32::from(head[6]);
        config.rate.prefix_v6 = u32::from(head[7]);
    }
    let lists = FixedLists {
        allow: (head[2] & 8 == 8).then_some(u32::from(head[3])),
        deny: (head[2] & 16 == 16).then_some(u32::from(head[4])),
    };
    let buckets = FuzzBuckets {
        now: word(8),
        global: Cell::new(word(16)),
        stored: word(8).rotate_left(13) ^ word(16),
    };
    let d = classify(frame, &config, &lists, &buckets);
    // Invariants of the policy.
    if config.dry_run() {
        assert_eq!(d.verdict.action(), Action::Pass, "dry-run never drops");
    }
    if frame.len() < 14 {
        assert_eq!(d.verdict, Verdict::Malformed);
    }
    if matches!(d.verdict, Verdict::Allowlisted | Verdict::DroppedNotAllowlisted | Verdict::Denied | Verdict::RatePassed | Verdict::RateLimited) {
        assert!(d.source.is_some(), "a judged datagram has a source");
    }
    if d.verdict == Verdict::Allowlisted {
        assert!(lists.allow.is_some());
    }
});
