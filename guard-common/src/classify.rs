//! The classifier: the one definition of every verdict, run by the XDP program and by host tests.

use crate::{
    config::GuardConfig,
    parse::{
        ETH_P_IP, ETH_P_IPV6, Fragment, IPPROTO_UDP, Packet, Source, parse_ethernet, parse_ipv4,
        parse_ipv6, parse_udp,
    },
    ratelimit::{Buckets, admit},
    verdict::Verdict,
};

/// The result of a list lookup: 0 when no prefix holds the address, else the longest
/// matching prefix's length plus one. A more specific match compares greater and "no match"
/// is least. (A plain integer on purpose: an `Option<u32>` leaves its payload undefined when
/// `None`, and the verifier rejects reading such a register.)
pub type Match = u32;

/// The [`Match`] of a prefix of length `len`.
#[inline(always)]
pub const fn matched(len: u32) -> Match {
    len + 1
}

/// Allowlist and denylist lookups, injected: BPF maps in the kernel, plain tables in host
/// tests.
pub trait Lists {
    /// Longest allowlisted prefix holding this IPv4 source.
    fn allow_v4(&self, addr: [u8; 4]) -> Match;
    /// Longest allowlisted prefix holding this IPv6 source.
    fn allow_v6(&self, addr: [u8; 16]) -> Match;
    /// Longest denylisted prefix holding this IPv4 source.
    fn deny_v4(&self, addr: [u8; 4]) -> Match;
    /// Longest denylisted prefix holding this IPv6 source.
    fn deny_v6(&self, addr: [u8; 16]) -> Match;
}

/// A verdict and, for UDP to a protected port, the source it was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict (after dry-run).
    pub verdict: Verdict,
    /// The source of a judged datagram to a protected port.
    pub source: Option<Source>,
}

/// Judges one frame.
///
/// UDP to a protected port passes from an allowlisted source, is dropped from a denylisted one
/// (the denylist wins when its match is at least as specific as the allowlist's), and from any
/// other source is dropped or, under the rate-limit policy, passes within the rate limits.
/// Everything else passes untouched. Non-first fragments pass, tiny first fragments and
/// over-long IPv6 extension chains are dropped, truncated or invalid headers pass as malformed
/// (the kernel discards them). Under dry-run, drops become [`Verdict::WouldDrop`].
#[inline(always)]
pub fn classify<P, L, B>(pkt: &P, config: &GuardConfig, lists: &L, buckets: &B) -> Decision
where
    P: Packet + ?Sized,
    L: Lists + ?Sized,
    B: Buckets + ?Sized,
{
    let mut source = None;
    let verdict = match judge(pkt, config, lists, buckets, &mut source) {
        Ok(v) | Err(v) => v,
    };
    Decision {
        verdict: verdict.dry_run(config.dry_run()),
        source,
    }
}

#[inline(always)]
fn judge<P, L, B>(
    pkt: &P,
    config: &GuardConfig,
    lists: &L,
    buckets: &B,
    judged: &mut Option<Source>,
) -> Result<Verdict, Verdict>
where
    P: Packet + ?Sized,
    L: Lists + ?Sized,
    B: Buckets + ?Sized,
{
    let mut cursor = 0;
    let net = match parse_ethernet(pkt, &mut cursor)? {
        ETH_P_IP => parse_ipv4(pkt, &mut cursor)?,
        ETH_P_IPV6 => parse_ipv6(pkt, &mut cursor)?,
        _ => return Ok(Verdict::NotProtected),
    };
    if net.protocol != IPPROTO_UDP {
        return Ok(Verdict::NotProtected);
    }
    match net.fragment {
        Fragment::Later => return Ok(Verdict::FragmentPassed),
        Fragment::First if cursor + 8 > net.end => return Ok(Verdict::DroppedTinyFragment),
        Fragment::First | Fragment::Whole => {}
    }
    let port = parse_udp(pkt, &mut cursor)?;
    if !config.protects(port) {
        return Ok(Verdict::NotProtected);
    }
    *judged = Some(net.source);
    let (allow, deny) = match net.source {
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
    // The denylist wins over an allowlist match of the same or a shorter prefix.
    Ok(if deny != 0 && deny >= allow {
        Verdict::Denied
    } else if allow != 0 {
        Verdict::Allowlisted
    } else if !config.rate_limited() {
        Verdict::DroppedNotAllowlisted
    } else if admit(buckets, &config.rate, &net.source) {
        Verdict::RatePassed
    } else {
        Verdict::RateLimited
    })
}
