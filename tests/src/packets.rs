//! Crafted frames and the table of expected verdicts shared by the host and kernel tests.
//!
//! Expected verdicts here are written by hand from the policy in the README, independently of
//! the classifier: the host test checks the classifier against them, the kernel test checks
//! the loaded XDP program against both.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::IpAddr,
};

use guard_common::{
    GuardConfig, Lists, Match, Verdict, classify,
    config::MEMCACHED_PORT,
    matched,
    parse::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS,
        IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_UDP,
    },
    ratelimit::{BucketKey, Buckets},
};
use ipnet::IpNet;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of ESP.
pub const IPPROTO_ESP: u8 = 50;
/// IPv6 "no next header".
pub const IPPROTO_NONE: u8 = 59;

/// An allowlisted IPv4 source (inside 10.0.0.0/8).
pub const V4_ALLOWED: [u8; 4] = [10, 1, 2, 3];
/// An allowlisted IPv4 host (192.0.2.7/32).
pub const V4_HOST: [u8; 4] = [192, 0, 2, 7];
/// A source outside the IPv4 allowlist.
pub const V4_OTHER: [u8; 4] = [203, 0, 113, 9];
/// The guarded host's IPv4 address.
pub const V4_SERVER: [u8; 4] = [198, 51, 100, 1];
/// An allowlisted IPv6 source (inside 2001:db8:a::/48).
pub const V6_ALLOWED: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
/// A source outside the IPv6 allowlist.
pub const V6_OTHER: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
/// The guarded host's IPv6 address.
pub const V6_SERVER: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

/// The allowlist the table assumes.
pub fn table_allowlist() -> Vec<IpNet> {
    ["10.0.0.0/8", "192.0.2.7/32", "2001:db8:a::/48"]
        .iter()
        .map(|s| s.parse().expect("valid CIDR"))
        .collect()
}

/// The config the table assumes: port 11211 protected, dry-run off.
pub fn table_config() -> GuardConfig {
    let mut c = GuardConfig::EMPTY;
    c.protect(MEMCACHED_PORT);
    c
}

/// Plain allowlist and denylist for host tests: linear scans over [`IpNet`]s (independent of
/// any trie), returning the longest matching prefix.
#[derive(Clone, Debug, Default)]
pub struct HostLists {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl HostLists {
    /// An allowlist of these prefixes and an empty denylist.
    pub fn new(allow: &[IpNet]) -> Self {
        Self::with_deny(allow, &[])
    }

    /// An allowlist and a denylist.
    pub fn with_deny(allow: &[IpNet], deny: &[IpNet]) -> Self {
        Self {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
        }
    }
}

fn longest(nets: &[IpNet], addr: IpAddr) -> Match {
    nets.iter()
        .filter(|n| n.contains(&addr))
        .map(|n| matched(u32::from(n.prefix_len())))
        .max()
        .unwrap_or(0)
}

impl Lists for HostLists {
    fn allow_v4(&self, addr: &[u8; 4]) -> Match {
        longest(&self.allow, IpAddr::from(*addr))
    }

    fn allow_v6(&self, addr: &[u8; 16]) -> Match {
        longest(&self.allow, IpAddr::from(*addr))
    }

    fn deny_v4(&self, addr: &[u8; 4]) -> Match {
        longest(&self.deny, IpAddr::from(*addr))
    }

    fn deny_v6(&self, addr: &[u8; 16]) -> Match {
        longest(&self.deny, IpAddr::from(*addr))
    }
}

/// Rate-limit buckets for host tests: hash maps and a clock the test sets. `global` never
/// fails its compare-and-swap (one thread).
#[derive(Debug, Default)]
pub struct HostBuckets {
    /// The clock, nanoseconds.
    pub now: Cell<u64>,
    /// The global bucket's time.
    pub global: Cell<u64>,
    /// Per-prefix buckets.
    pub prefixes: RefCell<HashMap<BucketKey, u64>>,
    /// Per-source buckets.
    pub sources: RefCell<HashMap<BucketKey, u64>>,
}

impl HostBuckets {
    /// Empty buckets with the clock at `now`.
    pub fn at(now: u64) -> Self {
        let b = Self::default();
        b.now.set(now);
        b
    }
}

impl Buckets for HostBuckets {
    fn now_ns(&self) -> u64 {
        self.now.get()
    }

    fn global(&self) -> u64 {
        self.global.get()
    }

    fn commit_global(&self, old: u64, new: u64) -> bool {
        if self.global.get() != old {
            return false;
        }
        self.global.set(new);
        true
    }

    fn prefix(&self, key: &BucketKey) -> Option<u64> {
        self.prefixes.borrow().get(key).copied()
    }

    fn set_prefix(&self, key: &BucketKey, tat: u64) {
        self.prefixes.borrow_mut().insert(*key, tat);
    }

    fn source(&self, key: &BucketKey) -> Option<u64> {
        self.sources.borrow().get(key).copied()
    }

    fn set_source(&self, key: &BucketKey, tat: u64) {
        self.sources.borrow_mut().insert(*key, tat);
    }
}

/// The host model's verdict for one frame.
pub fn host_verdict(
    frame: &[u8],
    config: &GuardConfig,
    lists: &HostLists,
    buckets: &HostBuckets,
) -> Verdict {
    classify(frame, config, lists, buckets).verdict
}

/// An Ethernet header with optional VLAN tags (outermost first), then `ethertype`.
pub fn ethernet(tags: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header fields a case may vary.
#[derive(Clone, Copy, Debug)]
pub struct V4 {
    /// Source address.
    pub src: [u8; 4],
    /// Protocol.
    pub proto: u8,
    /// IHL in 32-bit words (5 = no options). Values below 5 make a malformed header.
    pub ihl: u8,
    /// Version nibble (4 unless testing a bad one).
    pub version: u8,
    /// Flags and fragment offset field (0x2000 = MF, low 13 bits = offset in 8-byte units).
    pub frag: u16,
    /// Overrides the total length field.
    pub total_len: Option<u16>,
}

impl V4 {
    /// A plain header from `src`.
    pub fn from(src: [u8; 4]) -> Self {
        Self {
            src,
            proto: IPPROTO_UDP,
            ihl: 5,
            version: 4,
            frag: 0,
            total_len: None,
        }
    }
}

/// An IPv4 header (options as NOPs) followed by `payload`, with a correct checksum.
pub fn ipv4(h: V4, payload: &[u8]) -> Vec<u8> {
    let hlen = (h.ihl.max(5) as usize) * 4;
    let total = h.total_len.unwrap_or((hlen + payload.len()) as u16);
    let mut p = vec![0u8; hlen];
    p[0] = (h.version << 4) | (h.ihl & 0x0F);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6..8].copy_from_slice(&h.frag.to_be_bytes());
    p[8] = 64;
    p[9] = h.proto;
    p[12..16].copy_from_slice(&h.src);
    p[16..20].copy_from_slice(&V4_SERVER);
    for b in &mut p[20..] {
        *b = 1; // NOP options
    }
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv6 header from `src` with `next` header and `payload` (extension headers included).
/// `payload_len` overrides the length field.
pub fn ipv6(src: [u8; 16], next: u8, payload: &[u8], payload_len: Option<u16>) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    let len = payload_len.unwrap_or(payload.len() as u16);
    p.extend_from_slice(&len.to_be_bytes());
    p.push(next);
    p.push(64);
    p.extend_from_slice(&src);
    p.extend_from_slice(&V6_SERVER);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 extension header of `kind` with `next`, `units` 8-byte units long (for AH: the
/// same total length, encoded in AH's 4-byte units).
pub fn ipv6_ext(kind: u8, next: u8, units: usize) -> Vec<u8> {
    let mut h = vec![0u8; units.max(1) * 8];
    h[0] = next;
    h[1] = match kind {
        IPPROTO_AH => (units.max(1) * 2 - 2) as u8,
        _ => (units.max(1) - 1) as u8,
    };
    if kind != IPPROTO_AH {
        // PadN option filling the rest, so the header is valid as options too.
        h[2] = 1;
        h[3] = (h.len() - 4) as u8;
    }
    h
}

/// An IPv6 fragment header: `offset` in 8-byte units, `more` fragments flag.
pub fn ipv6_frag(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let field = (offset << 3) | u16::from(more);
    let mut h = vec![next, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&0xdead_beefu32.to_be_bytes());
    h
}

/// A UDP header and payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// The memcached UDP probe used in the wild: frame header and `stats`.
pub const STATS_PROBE: &[u8] = b"\x00\x00\x00\x00\x00\x01\x00\x00stats\r\n";

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Case {
    /// What the frame is.
    pub name: String,
    /// The frame, from the Ethernet header.
    pub frame: Vec<u8>,
    /// The verdict the policy demands.
    pub expected: Verdict,
    /// Length of the headers the verdict depends on: any truncation below it is malformed.
    pub header_end: usize,
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn case(name: impl Into<String>, frame: Vec<u8>, expected: Verdict, header_end: usize) -> Case {
    Case {
        name: name.into(),
        frame,
        expected,
        header_end,
    }
}

/// A UDP/IPv4 memcached probe frame from `src` behind `tags`.
pub fn v4_probe(tags: &[u16], h: V4, dport: u16) -> Vec<u8> {
    cat(&[
        &ethernet(tags, ETH_P_IP),
        &ipv4(h, &udp(40000, dport, STATS_PROBE)),
    ])
}

/// A UDP/IPv6 memcached probe frame from `src` behind `exts` (already chained to UDP).
pub fn v6_probe(src: [u8; 16], first: u8, exts: &[u8], dport: u16) -> Vec<u8> {
    cat(&[
        &ethernet(&[], ETH_P_IPV6),
        &ipv6(
            src,
            first,
            &cat(&[exts, &udp(40000, dport, STATS_PROBE)]),
            None,
        ),
    ])
}

/// A chain of `n` destination-options headers ending in UDP, and the first header's type.
pub fn dstopts_chain(n: usize) -> (u8, Vec<u8>) {
    let mut chain = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n {
            IPPROTO_UDP
        } else {
            IPPROTO_DSTOPTS
        };
        chain.extend(ipv6_ext(IPPROTO_DSTOPTS, next, 1));
    }
    (if n == 0 { IPPROTO_UDP } else { IPPROTO_DSTOPTS }, chain)
}

/// The table of crafted frames with their expected verdicts, under [`table_config`] and
/// [`table_allowlist`].
pub fn cases() -> Vec<Case> {
    use Verdict::*;
    let mut v = Vec::new();
    let p = MEMCACHED_PORT;
    let udp_end_v4 = 14 + 20 + 8;
    let udp_end_v6 = 14 + 40 + 8;

    // IPv4 basics.
    v.push(case(
        "v4 allowlisted",
        v4_probe(&[], V4::from(V4_ALLOWED), p),
        Allowlisted,
        udp_end_v4,
    ));
    v.push(case(
        "v4 /32 host allowlisted",
        v4_probe(&[], V4::from(V4_HOST), p),
        Allowlisted,
        udp_end_v4,
    ));
    v.push(case(
        "v4 next to /32 host",
        v4_probe(&[], V4::from([192, 0, 2, 8]), p),
        DroppedNotAllowlisted,
        udp_end_v4,
    ));
    v.push(case(
        "v4 not allowlisted",
        v4_probe(&[], V4::from(V4_OTHER), p),
        DroppedNotAllowlisted,
        udp_end_v4,
    ));
    v.push(case(
        "v4 other port",
        v4_probe(&[], V4::from(V4_OTHER), 53),
        NotProtected,
        udp_end_v4,
    ));
    v.push(case(
        "v4 adjacent port 11212",
        v4_probe(&[], V4::from(V4_OTHER), 11212),
        NotProtected,
        udp_end_v4,
    ));
    v.push(case(
        "v4 source port 11211 (a reply to our client)",
        cat(&[
            &ethernet(&[], ETH_P_IP),
            &ipv4(V4::from(V4_OTHER), &udp(p, 40000, b"VALUE")),
        ]),
        NotProtected,
        udp_end_v4,
    ));
    v.push(case(
        "v4 tcp to 11211",
        cat(&[
            &ethernet(&[], ETH_P_IP),
            &ipv4(
                V4 {
                    proto: IPPROTO_TCP,
                    ..V4::from(V4_OTHER)
                },
                &[0u8; 20],
            ),
        ]),
        NotProtected,
        14 + 20,
    ));
    v.push(case(
        "v4 icmp",
        cat(&[
            &ethernet(&[], ETH_P_IP),
            &ipv4(
                V4 {
                    proto: IPPROTO_ICMP,
                    ..V4::from(V4_OTHER)
                },
                &[8, 0, 0, 0, 0, 0, 0, 0],
            ),
        ]),
        NotProtected,
        14 + 20,
    ));
    v.push(case(
        "arp",
        cat(&[&ethernet(&[], 0x0806), &[0u8; 28]]),
        NotProtected,
        14,
    ));
    v.push(case(
        "v4 with a lying total length (judged by port)",
        v4_probe(
            &[],
            V4 {
                total_len: Some(20),
                ..V4::from(V4_OTHER)
            },
            p,
        ),
        DroppedNotAllowlisted,
        udp_end_v4,
    ));

    // VLANs.
    v.push(case(
        "802.1Q not allowlisted",
        v4_probe(&[ETH_P_8021Q], V4::from(V4_OTHER), p),
        DroppedNotAllowlisted,
        udp_end_v4 + 4,
    ));
    v.push(case(
        "802.1Q allowlisted",
        v4_probe(&[ETH_P_8021Q], V4::from(V4_ALLOWED), p),
        Allowlisted,
        udp_end_v4 + 4,
    ));
    v.push(case(
        "QinQ not allowlisted",
        v4_probe(&[ETH_P_8021AD, ETH_P_8021Q], V4::from(V4_OTHER), p),
        DroppedNotAllowlisted,
        udp_end_v4 + 8,
    ));
    v.push(case(
        "QinQ 8100/8100 allowlisted",
        v4_probe(&[ETH_P_8021Q, ETH_P_8021Q], V4::from(V4_ALLOWED), p),
        Allowlisted,
        udp_end_v4 + 8,
    ));
    v.push(case(
        "three VLAN tags",
        v4_probe(
            &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
            V4::from(V4_OTHER),
            p,
        ),
        Malformed,
        14 + 12,
    ));
    v.push(case(
        "QinQ IPv6 not allowlisted",
        cat(&[
            &ethernet(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IPV6),
            &ipv6(V6_OTHER, IPPROTO_UDP, &udp(1, p, STATS_PROBE), None),
        ]),
        DroppedNotAllowlisted,
        udp_end_v6 + 8,
    ));

    // IPv4 options and bad headers.
    for ihl in 6..=15u8 {
        let end = 14 + ihl as usize * 4 + 8;
        v.push(case(
            format!("v4 ihl {ihl} not allowlisted"),
            v4_probe(
                &[],
                V4 {
                    ihl,
                    ..V4::from(V4_OTHER)
                },
                p,
            ),
            DroppedNotAllowlisted,
            end,
        ));
        v.push(case(
            format!("v4 ihl {ihl} allowlisted"),
            v4_probe(
                &[],
                V4 {
                    ihl,
                    ..V4::from(V4_ALLOWED)
                },
                p,
            ),
            Allowlisted,
            end,
        ));
    }
    for ihl in 0..5u8 {
        v.push(case(
            format!("v4 ihl {ihl}"),
            v4_probe(
                &[],
                V4 {
                    ihl,
                    ..V4::from(V4_OTHER)
                },
                p,
            ),
            Malformed,
            14 + 20,
        ));
    }
    v.push(case(
        "v4 version 6 in an IPv4 frame",
        v4_probe(
            &[],
            V4 {
                version: 6,
                ..V4::from(V4_OTHER)
            },
            p,
        ),
        Malformed,
        14 + 20,
    ));

    // IPv4 fragments.
    let first = V4 {
        frag: 0x2000,
        ..V4::from(V4_OTHER)
    };
    v.push(case(
        "v4 first fragment not allowlisted",
        v4_probe(&[], first, p),
        DroppedNotAllowlisted,
        udp_end_v4,
    ));
    v.push(case(
        "v4 first fragment allowlisted",
        v4_probe(
            &[],
            V4 {
                src: V4_ALLOWED,
                ..first
            },
            p,
        ),
        Allowlisted,
        udp_end_v4,
    ));
    v.push(case(
        "v4 first fragment to another port",
        v4_probe(&[], first, 53),
        NotProtected,
        udp_end_v4,
    ));
    let tiny = |src| {
        cat(&[
            &ethernet(&[], ETH_P_IP),
            &ipv4(
                V4 {
                    frag: 0x2000,
                    ..V4::from(src)
                },
                &udp(40000, p, b"")[..4],
            ),
        ])
    };
    v.push(case(
        "v4 tiny first fragment (4 bytes of UDP)",
        tiny(V4_OTHER),
        DroppedTinyFragment,
        14 + 20,
    ));
    v.push(case(
        "v4 tiny first fragment from allowlisted",
        tiny(V4_ALLOWED),
        DroppedTinyFragment,
        14 + 20,
    ));
    v.push(case(
        "v4 tiny first fragment, frame padded past its length",
        cat(&[&tiny(V4_OTHER), &[0u8; 12]]),
        DroppedTinyFragment,
        14 + 20,
    ));
    v.push(case(
        "v4 later fragment",
        v4_probe(
            &[],
            V4 {
                frag: 185,
                ..V4::from(V4_OTHER)
            },
            p,
        ),
        FragmentPassed,
        14 + 20,
    ));
    v.push(case(
        "v4 last fragment",
        v4_probe(
            &[],
            V4 {
                frag: 0x2000 | 1,
                ..V4::from(V4_OTHER)
            },
            p,
        ),
        FragmentPassed,
        14 + 20,
    ));
    v.push(case(
        "v4 later fragment of tcp",
        cat(&[
            &ethernet(&[], ETH_P_IP),
            &ipv4(
                V4 {
                    frag: 3,
                    proto: IPPROTO_TCP,
                    ..V4::from(V4_OTHER)
                },
                &[0u8; 16],
            ),
        ]),
        NotProtected,
        14 + 20,
    ));

    // IPv6.
    v.push(case(
        "v6 allowlisted",
        v6_probe(V6_ALLOWED, IPPROTO_UDP, &[], p),
        Allowlisted,
        udp_end_v6,
    ));
    v.push(case(
        "v6 not allowlisted",
        v6_probe(V6_OTHER, IPPROTO_UDP, &[], p),
        DroppedNotAllowlisted,
        udp_end_v6,
    ));
    v.push(case(
        "v6 other port",
        v6_probe(V6_OTHER, IPPROTO_UDP, &[], 53),
        NotProtected,
        udp_end_v6,
    ));
    v.push(case(
        "v6 tcp",
        cat(&[
            &ethernet(&[], ETH_P_IPV6),
            &ipv6(V6_OTHER, IPPROTO_TCP, &[0u8; 20], None),
        ]),
        NotProtected,
        14 + 40,
    ));
    v.push(case(
        "v6 esp",
        cat(&[
            &ethernet(&[], ETH_P_IPV6),
            &ipv6(V6_OTHER, IPPROTO_ESP, &[0u8; 16], None),
        ]),
        NotProtected,
        14 + 40,
    ));
    v.push(case(
        "v6 no next header",
        cat(&[
            &ethernet(&[], ETH_P_IPV6),
            &ipv6(V6_OTHER, IPPROTO_NONE, &[], None),
        ]),
        NotProtected,
        14 + 40,
    ));
    let mut bad_version = v6_probe(V6_OTHER, IPPROTO_UDP, &[], p);
    bad_version[14] = 0x40;
    v.push(case(
        "v6 version 4 in an IPv6 frame",
        bad_version,
        Malformed,
        14 + 40,
    ));

    // IPv6 extension chains.
    let hbh_dst_rt = cat(&[
        &ipv6_ext(IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, 1),
        &ipv6_ext(IPPROTO_DSTOPTS, IPPROTO_ROUTING, 2),
        &ipv6_ext(IPPROTO_ROUTING, IPPROTO_UDP, 3),
    ]);
    v.push(case(
        "v6 hbh+dst+routing not allowlisted",
        v6_probe(V6_OTHER, IPPROTO_HOPOPTS, &hbh_dst_rt, p),
        DroppedNotAllowlisted,
        udp_end_v6 + 48,
    ));
    v.push(case(
        "v6 hbh+dst+routing allowlisted",
        v6_probe(V6_ALLOWED, IPPROTO_HOPOPTS, &hbh_dst_rt, p),
        Allowlisted,
        udp_end_v6 + 48,
    ));
    let ah = ipv6_ext(IPPROTO_AH, IPPROTO_UDP, 3);
    v.push(case(
        "v6 ah not allowlisted",
        v6_probe(V6_OTHER, IPPROTO_AH, &ah, p),
        DroppedNotAllowlisted,
        udp_end_v6 + 24,
    ));
    for n in [1usize, 7, 8] {
        let (first, chain) = dstopts_chain(n);
        v.push(case(
            format!("v6 {n} ext headers not allowlisted"),
            v6_probe(V6_OTHER, first, &chain, p),
            DroppedNotAllowlisted,
            udp_end_v6 + 8 * n,
        ));
        v.push(case(
            format!("v6 {n} ext headers allowlisted"),
            v6_probe(V6_ALLOWED, first, &chain, p),
            Allowlisted,
            udp_end_v6 + 8 * n,
        ));
    }
    for n in [9usize, 12] {
        let (first, chain) = dstopts_chain(n);
        v.push(case(
            format!("v6 {n} ext headers (over-long chain)"),
            v6_probe(V6_ALLOWED, first, &chain, p),
            DroppedMalformed,
            14 + 40 + 8 * 8,
        ));
        v.push(case(
            format!("v6 {n} ext headers to another port"),
            v6_probe(V6_OTHER, first, &chain, 53),
            DroppedMalformed,
            14 + 40 + 8 * 8,
        ));
    }

    // IPv6 fragments.
    let frag_first = ipv6_frag(IPPROTO_UDP, 0, true);
    v.push(case(
        "v6 first fragment not allowlisted",
        v6_probe(V6_OTHER, IPPROTO_FRAGMENT, &frag_first, p),
        DroppedNotAllowlisted,
        udp_end_v6 + 8,
    ));
    v.push(case(
        "v6 first fragment allowlisted",
        v6_probe(V6_ALLOWED, IPPROTO_FRAGMENT, &frag_first, p),
        Allowlisted,
        udp_end_v6 + 8,
    ));
    v.push(case(
        "v6 atomic fragment",
        v6_probe(
            V6_OTHER,
            IPPROTO_FRAGMENT,
            &ipv6_frag(IPPROTO_UDP, 0, false),
            p,
        ),
        DroppedNotAllowlisted,
        udp_end_v6 + 8,
    ));
    let tiny6 = cat(&[
        &ethernet(&[], ETH_P_IPV6),
        &ipv6(
            V6_ALLOWED,
            IPPROTO_FRAGMENT,
            &cat(&[&frag_first, &udp(40000, p, b"")[..4]]),
            None,
        ),
    ]);
    v.push(case(
        "v6 tiny first fragment",
        tiny6,
        DroppedTinyFragment,
        14 + 40 + 8,
    ));
    v.push(case(
        "v6 later fragment",
        v6_probe(
            V6_OTHER,
            IPPROTO_FRAGMENT,
            &ipv6_frag(IPPROTO_UDP, 100, true),
            p,
        ),
        FragmentPassed,
        14 + 40 + 8,
    ));
    v.push(case(
        "v6 later fragment after dstopts",
        v6_probe(
            V6_OTHER,
            IPPROTO_DSTOPTS,
            &cat(&[
                &ipv6_ext(IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, 1),
                &ipv6_frag(IPPROTO_UDP, 7, false),
            ]),
            p,
        ),
        FragmentPassed,
        14 + 40 + 16,
    ));
    v.push(case(
        "v6 later fragment of tcp",
        v6_probe(
            V6_OTHER,
            IPPROTO_FRAGMENT,
            &ipv6_frag(IPPROTO_TCP, 7, false),
            p,
        ),
        NotProtected,
        14 + 40 + 8,
    ));
    v
}

/// Every truncation of the table's frames: cut below a case's `header_end` it is malformed,
/// at or beyond it the case keeps its verdict (payload truncation is the kernel's business).
pub fn truncations() -> Vec<Case> {
    let mut out = Vec::new();
    for c in cases() {
        for len in 0..c.frame.len() {
            let expected = if len < c.header_end {
                Verdict::Malformed
            } else {
                c.expected
            };
            out.push(Case {
                name: format!("{} cut to {len}", c.name),
                frame: c.frame[..len].to_vec(),
                expected,
                header_end: c.header_end,
            });
        }
    }
    out
}
