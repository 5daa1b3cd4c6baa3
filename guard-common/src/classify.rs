//! The classifier: the one definition of every verdict, run by the XDP program and by host tests.

use crate::{
    config::GuardConfig,
    parse::{
        ETH_P_IP, ETH_P_IPV6, EthHdr, Fragment, Header, IPPROTO_UDP, Ipv4Hdr, Network, Packet,
        Source, UdpHdr, parse_ethernet, parse_ipv4, parse_ipv6, parse_udp,
    },
    ratelimit::{Buckets, admit},
    verdict::Verdict,
};

/// The result of a list lookup: 0 when no prefix holds the address, else the longest
/// matching prefix's length plus one. A more specific match compares greater and "no match"
/// is least. (A plain integer on purpose: an `Option<u32>` leaves its payload undefined when
/// `None`, and the verifier rejects reading such a register. 64 bits because BPF registers
/// are: a 32-bit value merged from several lookups would be zero-extended before each test.)
pub type Match = u64;

/// The [`Match`] of a prefix of length `len`.
#[inline(always)]
pub const fn matched(len: u32) -> Match {
    len as Match + 1
}

/// Allowlist and denylist lookups, injected: BPF maps in the kernel, plain tables in host
/// tests.
pub trait Lists {
    /// Longest allowlisted prefix holding this IPv4 source.
    fn allow_v4(&self, addr: &[u8; 4]) -> Match;
    /// Longest allowlisted prefix holding this IPv6 source.
    fn allow_v6(&self, addr: &[u8; 16]) -> Match;
    /// Longest denylisted prefix holding this IPv4 source.
    fn deny_v4(&self, addr: &[u8; 4]) -> Match;
    /// Longest denylisted prefix holding this IPv6 source.
    fn deny_v6(&self, addr: &[u8; 16]) -> Match;
}

/// A verdict and, for UDP to a protected port, the source it was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The verdict (after dry-run).
    pub verdict: Verdict,
    /// The source of a judged datagram to a protected port (in the frame).
    pub source: Option<Source<'a>>,
}

impl<'a> Decision<'a> {
    /// The decision for `verdict` (before dry-run) about a datagram from `source`.
    ///
    /// Every path of [`judge_any`] and [`judge_port`] ends here with its own constant
    /// verdict, so the compiler folds the dry-run test into the paths that drop. (The fast
    /// path's verdicts are never subject to dry-run: it builds its decisions itself.)
    #[inline(always)]
    fn new(verdict: Verdict, source: Option<Source<'a>>, config: &GuardConfig) -> Self {
        Decision {
            verdict: verdict.dry_run(config.dry_run()),
            source,
        }
    }
}

/// Judges one frame.
///
/// UDP to a protected port passes from an allowlisted source, is dropped from a denylisted one
/// (the denylist wins when its match is at least as specific as the allowlist's), and from any
/// other source is dropped or, under the rate-limit policy, passes within the rate limits.
/// Everything else passes untouched. Non-first fragments pass, tiny first fragments and
/// over-long IPv6 extension chains are dropped, truncated or invalid headers pass as malformed
/// (the kernel discards them). Under dry-run, drops become [`Verdict::WouldDrop`].
///
/// Three steps: [`fast_path`] for plain IPv4 frames, then [`judge_port`] for the protected
/// datagrams it leaves (denylist, dry-run or rate limits in force) and [`judge_any`] for every
/// other frame. The XDP program runs the same steps.
#[inline(always)]
pub fn classify<'a, P, L, B>(
    pkt: &'a P,
    config: &GuardConfig,
    lists: &L,
    buckets: &B,
) -> Decision<'a>
where
    P: Packet + ?Sized,
    L: Lists + ?Sized,
    B: Buckets + ?Sized,
{
    match fast_path(pkt, config, lists) {
        Fast::Decided(verdict, frame) => Decision {
            verdict,
            source: match verdict {
                Verdict::NotProtected => None,
                _ => Some(Source::V4(&frame.ip.saddr)),
            },
        },
        Fast::Protected(frame) => judge_port(
            frame.udp.dest,
            Source::V4(&frame.ip.saddr),
            config,
            lists,
            buckets,
        ),
        Fast::Other => judge_any(pkt, config, lists, buckets),
    }
}

/// A decision about a frame that was not judged (no protected datagram in it).
#[inline(always)]
fn unjudged<'a>(verdict: Verdict, config: &GuardConfig) -> Decision<'a> {
    Decision::new(verdict, None, config)
}

/// What the fast path ([`fast_path`]) made of a frame.
#[derive(Clone, Copy)]
pub enum Fast<'a> {
    /// Decided, as [`judge_any`] would: the verdict (before dry-run, which this verdict is
    /// never subject to), and the frame's headers. A judged datagram's source is
    /// `headers.ip.saddr`.
    Decided(Verdict, &'a PlainUdp4),
    /// UDP to a protected port in a plain IPv4 frame that is not a fragment, for
    /// [`judge_port`]: the denylist, dry-run or the rate-limit policy is in force.
    Protected(&'a PlainUdp4),
    /// Any other frame, for [`judge_any`].
    Other,
}

/// The fast path, for the most common frames: a [`PlainUdp4`] frame that is not a fragment,
/// parsed with one bounds check. It decides other protocols and ports that are not protected,
/// and, when the allowlist alone decides ([`GuardConfig::allowlist_only`]), UDP to a protected
/// port: one allowlist lookup. [`classify()`] finishes what it leaves; both decide alike (tested
/// below). The XDP program runs the same three steps and carries only the verdict on; for the
/// drops it samples it reads the source again ([`crate::parse::source`]).
#[inline(always)]
pub fn fast_path<'a, P, L>(pkt: &'a P, config: &GuardConfig, lists: &L) -> Fast<'a>
where
    P: Packet + ?Sized,
    L: Lists + ?Sized,
{
    let Some(frame) = pkt.header::<PlainUdp4>(0) else {
        return Fast::Other;
    };
    if frame.eth.ethertype != ETH_P_IP.to_be_bytes() || frame.ip.version_ihl != 0x45 {
        return Fast::Other;
    }
    if frame.ip.protocol != IPPROTO_UDP {
        return Fast::Decided(Verdict::NotProtected, frame);
    }
    if u16::from_le_bytes(frame.ip.frag_off) & FRAGMENT_BITS_LE != 0 {
        return Fast::Other;
    }
    if !config.protects_wire(frame.udp.dest) {
        return Fast::Decided(Verdict::NotProtected, frame);
    }
    if !config.allowlist_only() {
        return Fast::Protected(frame);
    }
    // No denylist, no dry-run, the drop policy: what `judge_port` decides then.
    let verdict = if lists.allow_v4(&frame.ip.saddr) != 0 {
        Verdict::Allowlisted
    } else {
        Verdict::DroppedNotAllowlisted
    };
    Fast::Decided(verdict, frame)
}

/// The bits of an IPv4 header's flags-and-offset field, read as a little-endian `u16` (so one
/// load and one mask on the BPF target), that make a packet a fragment: MF and the 13-bit
/// offset. The reserved and DF bits are not among them.
const FRAGMENT_BITS_LE: u16 = u16::from_le_bytes([0x3F, 0xFF]);

/// The most common frame, in one piece: Ethernet without VLAN tags, IPv4 without options, and
/// room for a UDP header. One bounds check covers it all.
#[repr(C)]
pub struct PlainUdp4 {
    /// Ethernet header.
    pub eth: EthHdr,
    /// IPv4 header (IHL 5).
    pub ip: Ipv4Hdr,
    /// The 8 bytes after it: a UDP header if the protocol is UDP.
    pub udp: UdpHdr,
}

// SAFETY: repr(C) of headers, which are bytes.
unsafe impl Header for PlainUdp4 {}

/// The decision for any frame, parsed header by header. Each network protocol
/// gets its own copy of the datagram checks (`judge_datagram` is inlined into both arms), so
/// that each path is straight-line code that knows its address family.
#[inline(always)]
pub fn judge_any<'a, P, L, B>(
    pkt: &'a P,
    config: &GuardConfig,
    lists: &L,
    buckets: &B,
) -> Decision<'a>
where
    P: Packet + ?Sized,
    L: Lists + ?Sized,
    B: Buckets + ?Sized,
{
    let mut cursor = 0;
    match parse_ethernet(pkt, &mut cursor) {
        Ok(ETH_P_IP) => match parse_ipv4(pkt, &mut cursor) {
            Ok(net) => judge_datagram(pkt, cursor, net, config, lists, buckets),
            Err(verdict) => unjudged(verdict, config),
        },
        Ok(ETH_P_IPV6) => match parse_ipv6(pkt, &mut cursor) {
            Ok(net) => judge_datagram(pkt, cursor, net, config, lists, buckets),
            Err(verdict) => unjudged(verdict, config),
        },
        Ok(_) => unjudged(Verdict::NotProtected, config),
        Err(verdict) => unjudged(verdict, config),
    }
}

/// Judges the upper layer of an IP packet whose header ends at `cursor`.
#[inline(always)]
fn judge_datagram<'a, P, L, B>(
    pkt: &'a P,
    mut cursor: usize,
    net: Network<'a>,
    config: &GuardConfig,
    lists: &L,
    buckets: &B,
) -> Decision<'a>
where
    P: Packet + ?Sized,
    L: Lists + ?Sized,
    B: Buckets + ?Sized,
{
    if let Some(verdict) = udp_gate(&net, cursor) {
        return unjudged(verdict, config);
    }
    match parse_udp(pkt, &mut cursor) {
        Ok(dest) => judge_port(dest, net.source, config, lists, buckets),
        Err(verdict) => unjudged(verdict, config),
    }
}

/// The verdict of an IP packet whose upper-layer header starts at `cursor`, when it is decided
/// before the UDP header: other protocols and later fragments pass, a first fragment too short
/// for the UDP header is dropped. `None`: a UDP header follows, to be judged.
#[inline(always)]
fn udp_gate(net: &Network<'_>, cursor: usize) -> Option<Verdict> {
    if net.protocol != IPPROTO_UDP {
        return Some(Verdict::NotProtected);
    }
    match net.fragment {
        Fragment::Later => Some(Verdict::FragmentPassed),
        Fragment::First(end) if cursor + 8 > end => Some(Verdict::DroppedTinyFragment),
        Fragment::First(_) | Fragment::Whole => None,
    }
}

/// Judges a whole (or first-fragment) UDP datagram to the port whose header bytes are `dest`,
/// from `source`.
#[inline(always)]
pub fn judge_port<'a, L, B>(
    dest: [u8; 2],
    source: Source<'a>,
    config: &GuardConfig,
    lists: &L,
    buckets: &B,
) -> Decision<'a>
where
    L: Lists + ?Sized,
    B: Buckets + ?Sized,
{
    if !config.protects_wire(dest) {
        return unjudged(Verdict::NotProtected, config);
    }
    let (allow, deny) = match source {
        Source::V4(addr) => (
            lists.allow_v4(addr),
            if config.has_deny() {
                lists.deny_v4(addr)
            } else {
                0
            },
        ),
        Source::V6(addr) => (
            lists.allow_v6(addr),
            if config.has_deny() {
                lists.deny_v6(addr)
            } else {
                0
            },
        ),
    };
    // The denylist wins over an allowlist match of the same or a shorter prefix. Each branch
    // builds its own decision (see `Decision::new`).
    let judged = |verdict| Decision::new(verdict, Some(source), config);
    if deny != 0 && deny >= allow {
        judged(Verdict::Denied)
    } else if allow != 0 {
        judged(Verdict::Allowlisted)
    } else if !config.rate_limited() {
        judged(Verdict::DroppedNotAllowlisted)
    } else if admit(buckets, &config.rate, &source) {
        judged(Verdict::RatePassed)
    } else {
        judged(Verdict::RateLimited)
    }
}

#[cfg(test)]
mod tests {
    //! The fast path for [`PlainUdp4`] frames must decide exactly what the header-by-header
    //! path decides. (Kernel against host model is the differential test's job, in
    //! guard-tests.)
    use super::*;
    use crate::{
        config::{MEMCACHED_PORT, POLICY_RATE_LIMIT},
        ratelimit::{BucketKey, RateSpec},
    };

    /// Allowlisted: 10.0.0.0/8; denylisted: 10.1.0.0/16 and 192.0.2.0/24.
    struct FixedLists;

    impl Lists for FixedLists {
        fn allow_v4(&self, a: &[u8; 4]) -> Match {
            if a[0] == 10 { matched(8) } else { 0 }
        }
        fn allow_v6(&self, a: &[u8; 16]) -> Match {
            if a[0] == 0x20 { matched(8) } else { 0 }
        }
        fn deny_v4(&self, a: &[u8; 4]) -> Match {
            match a {
                [10, 1, ..] => matched(16),
                [192, 0, 2, _] => matched(24),
                _ => 0,
            }
        }
        fn deny_v6(&self, _: &[u8; 16]) -> Match {
            0
        }
    }

    /// Buckets that admit everything (`true`) or whose global bucket refuses everything.
    struct FixedBuckets(bool);

    impl Buckets for FixedBuckets {
        fn now_ns(&self) -> u64 {
            1_000_000_000
        }
        fn global(&self) -> u64 {
            if self.0 { 0 } else { u64::MAX / 2 }
        }
        fn commit_global(&self, _: u64, _: u64) -> bool {
            true
        }
        fn prefix(&self, _: &BucketKey) -> Option<u64> {
            None
        }
        fn set_prefix(&self, _: &BucketKey, _: u64) {}
        fn source(&self, _: &BucketKey) -> Option<u64> {
            None
        }
        fn set_source(&self, _: &BucketKey, _: u64) {}
    }

    /// Ethernet + IPv4 (IHL 5) + UDP to memcached from `src`, with `payload` bytes after.
    fn plain(src: [u8; 4], payload: usize) -> [u8; 64] {
        let mut f = [0u8; 64];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
        f[23] = IPPROTO_UDP;
        f[26..30].copy_from_slice(&src);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&MEMCACHED_PORT.to_be_bytes());
        f
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn configs() -> [GuardConfig; 4] {
        let mut drop = GuardConfig::EMPTY;
        drop.protect(MEMCACHED_PORT);
        drop.protect(53);
        drop.set_has_deny(true);
        let mut rate = drop;
        rate.policy = POLICY_RATE_LIMIT;
        rate.rate.global = RateSpec::new(1, 1).unwrap();
        rate.rate.prefix = RateSpec::new(1_000_000, 1_000_000).unwrap();
        rate.rate.source = RateSpec::new(1_000_000, 1_000_000).unwrap();
        let mut no_deny = drop;
        no_deny.set_has_deny(false);
        let mut dry_run = no_deny;
        dry_run.set_dry_run(true);
        [drop, rate, no_deny, dry_run]
    }

    fn agree(frame: &[u8], seen: &mut [bool; 16]) {
        for config in configs() {
            for admit in [true, false] {
                let fast = classify(frame, &config, &FixedLists, &FixedBuckets(admit));
                let slow = judge_any(frame, &config, &FixedLists, &FixedBuckets(admit));
                assert_eq!(fast, slow, "frame {frame:02x?}");
                seen[fast.verdict.slot() as usize] = true;
                // A judged datagram's source reads again from the frame alone.
                if fast.source.is_some() {
                    assert_eq!(crate::parse::source(frame), fast.source, "{frame:02x?}");
                }
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_the_full_parse() {
        let mut seen = [false; 16];
        let sources = [
            [10, 0, 0, 1],
            [10, 1, 2, 3],
            [192, 0, 2, 9],
            [198, 51, 100, 7],
        ];
        // Every value of every header byte, and every length, around each source.
        for src in sources {
            let base = plain(src, 8);
            for len in 0..=base.len() {
                agree(&base[..len], &mut seen);
            }
            for at in 0..46 {
                for value in 0..=255u8 {
                    let mut f = base;
                    f[at] = value;
                    agree(&f, &mut seen);
                    agree(&f[..42], &mut seen);
                }
            }
        }
        // Random changes to the fields that steer the parse, several at a time.
        let mut rng = Rng(0x1121_1121_1121_1121);
        for _ in 0..200_000 {
            let r = rng.next();
            let mut f = plain(sources[(r & 3) as usize], (r >> 2) as usize % 30);
            for _ in 0..(r >> 8) % 4 {
                let s = rng.next();
                let at = [12, 13, 14, 16, 17, 20, 21, 23, 36, 37][(s % 10) as usize];
                f[at] = (s >> 8) as u8;
            }
            let len = 34 + (r >> 16) as usize % 31;
            agree(&f[..len], &mut seen);
        }
        let missing: [Verdict; 0] = [];
        for v in Verdict::ALL {
            let expected = v != Verdict::DroppedMalformed;
            assert_eq!(
                seen[v.slot() as usize],
                expected,
                "{v:?} seen: {}",
                seen[v.slot() as usize]
            );
        }
        let _ = missing;
    }
}
