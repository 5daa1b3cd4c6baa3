//! The classifier: the one definition of every verdict, run by the XDP program and by host tests.

use crate::{
    config::GuardConfig,
    parse::{
        ETH_P_IP, ETH_P_IPV6, Fragment, IPPROTO_UDP, Packet, Source, parse_ethernet, parse_ipv4,
        parse_ipv6, parse_udp,
    },
    verdict::Verdict,
};

/// Allowlist lookups, injected: BPF maps in the kernel, a plain table in host tests.
pub trait Allowlist {
    /// Is this IPv4 source inside an allowlisted prefix?
    fn allows_v4(&self, addr: [u8; 4]) -> bool;
    /// Is this IPv6 source inside an allowlisted prefix?
    fn allows_v6(&self, addr: [u8; 16]) -> bool;
}

/// Judges one frame.
///
/// UDP to a protected port passes only from an allowlisted source; everything else passes
/// untouched. Non-first fragments pass, tiny first fragments and over-long IPv6 extension
/// chains are dropped, truncated or invalid headers pass as malformed (the kernel discards
/// them). Under dry-run, drops become [`Verdict::WouldDrop`].
#[inline(always)]
pub fn classify<P, A>(pkt: &P, config: &GuardConfig, allowlist: &A) -> Verdict
where
    P: Packet + ?Sized,
    A: Allowlist + ?Sized,
{
    let verdict = match judge(pkt, config, allowlist) {
        Ok(v) | Err(v) => v,
    };
    verdict.dry_run(config.dry_run())
}

#[inline(always)]
fn judge<P, A>(pkt: &P, config: &GuardConfig, allowlist: &A) -> Result<Verdict, Verdict>
where
    P: Packet + ?Sized,
    A: Allowlist + ?Sized,
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
    let allowed = match net.source {
        Source::V4(addr) => allowlist.allows_v4(addr),
        Source::V6(addr) => allowlist.allows_v6(addr),
    };
    Ok(if allowed {
        Verdict::Allowlisted
    } else {
        Verdict::DroppedNotAllowlisted
    })
}
