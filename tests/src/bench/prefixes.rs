//! The allowlists the bench loads: random prefixes over the whole address space with the mix
//! of docs/research (IPv4: 50% /32, 30% /24, 20% /16 to /30), and the addresses that hit or
//! miss them.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

/// Spoofed sources come from here; no allowlist prefix overlaps it (100.64.0.0/10).
pub const SPOOF_NET: [u8; 4] = [100, 64, 0, 0];
/// Length of [`SPOOF_NET`].
pub const SPOOF_LEN: u8 = 10;
/// `guard allow` timings add host prefixes from here; no allowlist prefix overlaps it.
pub const CLI_NET: [u8; 4] = [203, 0, 113, 0];

/// Prefixes no generated prefix may overlap: the spoof range, the CLI range, and the
/// guarded host's own network.
fn reserved() -> Vec<Ipv4Net> {
    vec![
        Ipv4Net::new(SPOOF_NET.into(), SPOOF_LEN).expect("valid"),
        Ipv4Net::new(CLI_NET.into(), 24).expect("valid"),
        Ipv4Net::new([198, 51, 100, 0].into(), 24).expect("valid"),
    ]
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The generated lists, largest first; smaller allowlists are prefixes of [`Self::v4`].
pub struct Lists {
    /// IPv4 prefixes; the first is a /32 whose neighbour (last bit flipped) no prefix holds.
    pub v4: Vec<Ipv4Net>,
    /// IPv6 prefixes; the first is a /128 whose neighbour no prefix holds.
    pub v6: Vec<Ipv6Net>,
}

impl Lists {
    /// `v4` IPv4 and `v6` IPv6 random, distinct prefixes from `seed`.
    pub fn generate(seed: u64, v4: usize, v6: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let reserved = reserved();
        let mut seen = HashSet::new();
        let mut out4 = Vec::with_capacity(v4);
        while out4.len() < v4 {
            let len = match rng.random_range(0..100) {
                0..50 => 32,
                50..80 => 24,
                _ => rng.random_range(16..=30),
            };
            let net = Ipv4Net::new(Ipv4Addr::from(rng.random::<u32>()), len)
                .expect("valid length")
                .trunc();
            if reserved.iter().any(|r| overlaps(r, &net)) || !seen.insert(net) {
                continue;
            }
            out4.push(net);
        }
        // The first entry is a /32 whose neighbour nothing covers: the deep hit and deep miss.
        let first = (0..out4.len())
            .find(|i| {
                let n = out4[*i];
                n.prefix_len() == 32 && !covered_v4(&seen, flip_v4(n.addr()))
            })
            .expect("some /32 has an uncovered neighbour");
        out4.swap(0, first);

        let mut seen6 = HashSet::new();
        let mut out6 = Vec::with_capacity(v6);
        while out6.len() < v6 {
            let len = match rng.random_range(0..100) {
                0..50 => 128,
                50..80 => 64,
                _ => rng.random_range(32..=60),
            };
            // Global unicast, 2000::/3.
            let bits = (rng.random::<u128>() >> 3) | (1u128 << 125);
            let net = Ipv6Net::new(Ipv6Addr::from(bits), len)
                .expect("valid length")
                .trunc();
            if seen6.insert(net) {
                out6.push(net);
            }
        }
        let first = (0..out6.len())
            .find(|i| {
                let n = out6[*i];
                n.prefix_len() == 128 && !covered_v6(&seen6, flip_v6(n.addr()))
            })
            .expect("some /128 has an uncovered neighbour");
        out6.swap(0, first);
        Self { v4: out4, v6: out6 }
    }

    /// The allowlist of `n` IPv4 prefixes (and every IPv6 one), as guard takes it.
    pub fn allowlist(&self, n: usize) -> Vec<IpNet> {
        self.v4[..n]
            .iter()
            .map(|p| IpNet::V4(*p))
            .chain(self.v6.iter().map(|p| IpNet::V6(*p)))
            .collect()
    }

    /// An allowlisted IPv4 source at full depth: the first /32 entry.
    pub fn v4_hit(&self) -> [u8; 4] {
        self.v4[0].addr().octets()
    }

    /// A non-allowlisted IPv4 source at full depth: the first /32 entry with its last bit
    /// flipped, which walks the whole trie before it misses.
    pub fn v4_deep_miss(&self) -> [u8; 4] {
        flip_v4(self.v4[0].addr()).octets()
    }

    /// A non-allowlisted IPv6 source at full depth.
    pub fn v6_deep_miss(&self) -> [u8; 16] {
        flip_v6(self.v6[0].addr()).octets()
    }
}

fn flip_v4(a: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a) ^ 1)
}

fn flip_v6(a: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(a) ^ 1)
}

fn covered_v4(set: &HashSet<Ipv4Net>, a: Ipv4Addr) -> bool {
    (0..=32).any(|len| set.contains(&Ipv4Net::new(a, len).expect("valid").trunc()))
}

fn covered_v6(set: &HashSet<Ipv6Net>, a: Ipv6Addr) -> bool {
    (0..=128).any(|len| set.contains(&Ipv6Net::new(a, len).expect("valid").trunc()))
}

/// The `i`-th of up to 2^22 distinct spoofed sources in [`SPOOF_NET`] (a bijection of the
/// low 22 bits, so that consecutive sources are spread over the range).
pub fn spoofed_source(i: u32) -> [u8; 4] {
    let host = i.wrapping_mul(0x9E37_79B1) & ((1 << 22) - 1);
    (u32::from_be_bytes(SPOOF_NET) | host).to_be_bytes()
}

/// Writes `src` into an untagged IPv4 frame and recomputes the header checksum.
pub fn set_v4_source(frame: &mut [u8], src: [u8; 4]) {
    frame[26..30].copy_from_slice(&src);
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = guard_tests::packets::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
}

/// The prefixes as nft set elements, comma separated.
pub fn nft_elements(v4: &[Ipv4Net]) -> String {
    let mut s = String::with_capacity(v4.len() * 18);
    for (i, p) in v4.iter().enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        s.push_str(&p.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_distinct_and_avoid_reserved_ranges() {
        let l = Lists::generate(7, 5000, 500);
        assert_eq!(l.v4.len(), 5000);
        assert_eq!(l.v4[0].prefix_len(), 32);
        let spoof = Ipv4Net::new(SPOOF_NET.into(), SPOOF_LEN).unwrap();
        assert!(l.v4.iter().all(|p| !overlaps(p, &spoof)));
        assert!(
            !l.v4
                .iter()
                .any(|p| p.contains(&Ipv4Addr::from(l.v4_deep_miss())))
        );
        assert!(
            !l.v6
                .iter()
                .any(|p| p.contains(&Ipv6Addr::from(l.v6_deep_miss())))
        );
    }

    #[test]
    fn spoofed_sources_are_distinct_and_in_range() {
        let spoof = Ipv4Net::new(SPOOF_NET.into(), SPOOF_LEN).unwrap();
        let mut seen = HashSet::new();
        for i in 0..100_000 {
            let s = spoofed_source(i);
            assert!(spoof.contains(&Ipv4Addr::from(s)));
            assert!(seen.insert(s));
        }
    }
}
