//! `guard top`: the heaviest dropped sources, from the sampled top-talkers map.

use std::net::{IpAddr, Ipv6Addr};

use guard_common::{Verdict, maps::TopEntry, ratelimit::BucketKey};
use serde::Serialize;

use crate::maps::GuardMaps;

/// One source's dropped traffic (estimates: sampled one drop in N, weighted by N).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Talker {
    /// Source address.
    pub source: IpAddr,
    /// Dropped datagrams.
    pub packets: u64,
    /// Dropped bytes.
    pub bytes: u64,
    /// The last verdict recorded (`dropped`, `rate_limited`, `denied`, `would_drop`).
    pub verdict: &'static str,
}

fn address(key: &BucketKey) -> IpAddr {
    let v6 = Ipv6Addr::from(*key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn verdict_name(slot: u32) -> &'static str {
    Verdict::ALL
        .iter()
        .find(|v| v.slot() == slot)
        .map_or("unknown", |v| v.name())
}

/// The `n` heaviest sources by dropped packets.
pub fn top(maps: &GuardMaps, n: usize) -> anyhow::Result<Vec<Talker>> {
    let mut all: Vec<Talker> = Vec::new();
    for item in maps.top.iter() {
        let (key, e): (BucketKey, TopEntry) = item?;
        all.push(Talker {
            source: address(&key),
            packets: e.packets,
            bytes: e.bytes,
            verdict: verdict_name(e.verdict),
        });
    }
    all.sort_by(|a, b| b.packets.cmp(&a.packets).then(b.bytes.cmp(&a.bytes)));
    all.truncate(n);
    Ok(all)
}

/// A table for humans.
pub fn render(talkers: &[Talker]) -> String {
    let mut s = format!(
        "{:<40} {:>14} {:>16}  {}\n",
        "SOURCE", "PACKETS", "BYTES", "VERDICT"
    );
    for t in talkers {
        s.push_str(&format!(
            "{:<40} {:>14} {:>16}  {}\n",
            t.source, t.packets, t.bytes, t.verdict
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn mapped_keys_read_back_as_ipv4() {
        let k = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1];
        assert_eq!(address(&k), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let mut k6 = [0u8; 16];
        k6[0] = 0x20;
        k6[15] = 1;
        assert!(address(&k6).is_ipv6());
    }
}
