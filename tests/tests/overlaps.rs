//! Overlapping prefixes across the levels of the IPv4 direct tables, changed live: /0, a /8
//! with a /16 hole listed differently, a /24 inside the /16, a /32 inside the /24, /25s that
//! make a /24 whole again, removal of covering prefixes, and the denylist's precedence, all
//! against the host model (a linear scan over the prefixes).
//!
//! Each step is checked twice: through the kernel (the loaded program's verdict on a probe
//! from each address, BPF_PROG_TEST_RUN) and in the tables themselves (the `Match` a lookup
//! finds for each address, in both lists, read back from the maps as the program reads them).

use std::{collections::BTreeSet, net::Ipv4Addr};

use aya::maps::lpm_trie::Key;
use guard_common::{
    Lists as _, Match,
    config::MEMCACHED_PORT,
    maps::{V4_CHUNKS, V4_ROWS, slot},
    matched,
};
use guard_tests::{
    kernel::Loaded,
    packets::{HostBuckets, HostLists, V4, host_verdict, table_config, v4_probe},
    privilege::require_privileges,
};
use guard_user::{
    attach::sync_deny_flag,
    lists::{self, List},
    loader::MapSizes,
    maps::GuardMaps,
    sys::MappedArray,
};
use ipnet::{IpNet, Ipv4Net};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// One list's direct tables, mapped into this process.
struct Tables {
    rows: MappedArray,
    chunks: MappedArray,
}

impl Tables {
    fn of(maps: &GuardMaps, list: List) -> Self {
        let (rows, chunks) = match list {
            List::Allow => (&maps.allow_v4_rows, &maps.allow_v4_chunks),
            List::Deny => (&maps.deny_v4_rows, &maps.deny_v4_chunks),
        };
        Self {
            rows: rows.mapped().unwrap(),
            chunks: chunks.mapped().unwrap(),
        }
    }

    fn slot(&self, addr: [u8; 4]) -> u16 {
        // SAFETY: the rows' u16 slots, 256 a row; the program may not write them.
        let slots: &[u16] = unsafe { self.rows.as_slice() };
        slots[(usize::from(addr[0]) << 16) | (usize::from(addr[1]) << 8) | usize::from(addr[2])]
    }

    fn byte(&self, chunk: u16, last: u8) -> u8 {
        // SAFETY: the chunks' bytes, 256 a chunk.
        let bytes: &[u8] = unsafe { self.chunks.as_slice() };
        bytes[usize::from(chunk) * 256 + usize::from(last)]
    }
}

/// The `Match` the program would find for `addr` in one list's tables (or its trie, for a
/// /24 left to it).
fn table_match(maps: &GuardMaps, tables: &Tables, list: List, addr: [u8; 4]) -> Match {
    let trie = match list {
        List::Allow => &maps.allow_v4,
        List::Deny => &maps.deny_v4,
    };
    let s = tables.slot(addr);
    if s <= slot::MAX_MATCH {
        Match::from(s)
    } else if s >= slot::CHUNK_BASE {
        Match::from(tables.byte(s - slot::CHUNK_BASE, addr[3]))
    } else {
        trie.get(&Key::new(32, addr), 0)
            .map_or(0, |e| matched(e.prefix_len))
    }
}

/// A live guard and the lists it should hold.
struct Live {
    k: Loaded,
    allow: BTreeSet<Ipv4Net>,
    deny: BTreeSet<Ipv4Net>,
}

impl Live {
    fn new() -> Self {
        Self {
            k: Loaded::new(&table_config(), &[], &[], &MapSizes::default()),
            allow: BTreeSet::new(),
            deny: BTreeSet::new(),
        }
    }

    fn set(&mut self, list: List) -> &mut BTreeSet<Ipv4Net> {
        match list {
            List::Allow => &mut self.allow,
            List::Deny => &mut self.deny,
        }
    }

    fn add(&mut self, list: List, nets: &[Ipv4Net]) {
        let ip: Vec<IpNet> = nets.iter().map(|n| IpNet::V4(*n)).collect();
        lists::add(&mut self.k.maps, list, &ip).unwrap();
        self.set(list).extend(nets);
        sync_deny_flag(&mut self.k.maps).unwrap();
    }

    fn remove(&mut self, list: List, nets: &[Ipv4Net]) {
        let ip: Vec<IpNet> = nets.iter().map(|n| IpNet::V4(*n)).collect();
        lists::remove_all(&mut self.k.maps, list, &ip).unwrap();
        for n in nets {
            self.set(list).remove(n);
        }
        sync_deny_flag(&mut self.k.maps).unwrap();
    }

    fn host(&self) -> HostLists {
        let ip = |s: &BTreeSet<Ipv4Net>| s.iter().map(|n| IpNet::V4(*n)).collect::<Vec<_>>();
        HostLists::with_deny(&ip(&self.allow), &ip(&self.deny))
    }

    /// Checks every probe in the tables, and `kernel` of them through the program.
    fn check(&mut self, step: &str, probes: &[[u8; 4]], kernel: usize) {
        let host = self.host();
        let mut wrong = Vec::new();
        let allow = Tables::of(&self.k.maps, List::Allow);
        let deny = Tables::of(&self.k.maps, List::Deny);
        for addr in probes {
            for (list, want) in [
                (List::Allow, host.allow_v4(addr)),
                (List::Deny, host.deny_v4(addr)),
            ] {
                let tables = if list == List::Allow { &allow } else { &deny };
                let got = table_match(&self.k.maps, tables, list, *addr);
                if got != want {
                    wrong.push(format!(
                        "{}: {} match {got}, host model {want}",
                        Ipv4Addr::from(*addr),
                        list.name()
                    ));
                }
            }
        }
        let mut config = table_config();
        config.set_has_deny(!self.deny.is_empty());
        let buckets = HostBuckets::at(1);
        let stride = (probes.len() / kernel.max(1)).max(1);
        for addr in probes.iter().step_by(stride) {
            let frame = v4_probe(&[], V4::from(*addr), MEMCACHED_PORT);
            let want = host_verdict(&frame, &config, &host, &buckets);
            let got = self.k.verdict(&frame);
            if got != want {
                wrong.push(format!(
                    "{}: kernel {got:?}, host model {want:?}",
                    Ipv4Addr::from(*addr)
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "after {step} (allow {:?}, deny {:?}):\n{}",
            self.allow,
            self.deny,
            wrong.join("\n")
        );
    }

    /// Asserts that the tables of both lists are empty again: every slot 0, every chunk free.
    fn assert_empty_tables(&self) {
        let maps = &self.k.maps;
        for (rows, owners) in [
            (&maps.allow_v4_rows, &maps.allow_v4_owners),
            (&maps.deny_v4_rows, &maps.deny_v4_owners),
        ] {
            let memory = rows.mapped().unwrap();
            // SAFETY: the mapping holds every row's u16 slots.
            let slots: &[u16] = unsafe { memory.as_slice() };
            assert_eq!(slots.len(), V4_ROWS as usize * 256);
            if let Some(i) = slots.iter().position(|s| *s != 0) {
                panic!(
                    "row {} is not empty: slot {} holds {}",
                    i / 256,
                    i % 256,
                    slots[i]
                );
            }
            for c in 0..V4_CHUNKS {
                assert_eq!(owners.get(&c, 0).unwrap(), 0, "chunk {c} is still owned");
            }
        }
    }
}

/// The addresses around each prefix: its first and last, their neighbours outside, and a few
/// inside.
fn probes_around(nets: &[Ipv4Net]) -> Vec<[u8; 4]> {
    let mut out = BTreeSet::new();
    for n in nets {
        let first = u32::from(n.network());
        let last = u32::from(n.broadcast());
        for a in [
            first,
            last,
            first.wrapping_sub(1),
            last.wrapping_add(1),
            first + (last - first) / 2,
            first.saturating_add(1).min(last),
            last.saturating_sub(1).max(first),
        ] {
            out.insert(a.to_be_bytes());
        }
    }
    out.into_iter().collect()
}

#[test]
fn overlapping_prefixes_across_the_levels_changed_live() {
    if !require_privileges("overlapping_prefixes_across_the_levels_changed_live") {
        return;
    }
    use List::{Allow, Deny};
    let all: Vec<Ipv4Net> = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.7/32",
        "10.2.0.0/16",
        "10.2.3.0/25",
        "10.2.3.128/25",
        "10.2.3.4/30",
        "10.2.3.6/31",
        "192.168.0.0/15",
        "192.169.255.255/32",
        "192.169.255.0/24",
    ]
    .iter()
    .map(|s| net(s))
    .collect();
    let mut probes = probes_around(&all);
    probes.extend([[0, 0, 0, 0], [255, 255, 255, 255], [203, 0, 113, 9]]);
    let mut live = Live::new();
    type Step = (&'static str, List, bool, &'static [&'static str]);
    let steps: &[Step] = &[
        ("allow a /8", Allow, true, &["10.0.0.0/8"]),
        ("deny a /16 hole in it", Deny, true, &["10.1.0.0/16"]),
        ("allow a /24 in the hole", Allow, true, &["10.1.2.0/24"]),
        ("deny a /32 in the /24", Deny, true, &["10.1.2.7/32"]),
        (
            "allow the same /32 (deny wins)",
            Allow,
            true,
            &["10.1.2.7/32"],
        ),
        (
            "allow a /16, a /30 and two /25s that fill their /24",
            Allow,
            true,
            &["10.2.0.0/16", "10.2.3.4/30", "10.2.3.0/25", "10.2.3.128/25"],
        ),
        ("deny a /31 inside the /30", Deny, true, &["10.2.3.6/31"]),
        ("revoke one /25", Allow, false, &["10.2.3.0/25"]),
        (
            "allow a /15 over two rows, deny at its edge",
            Allow,
            true,
            &["192.168.0.0/15"],
        ),
        (
            "deny the last /24 and /32 of the /15",
            Deny,
            true,
            &["192.169.255.0/24", "192.169.255.255/32"],
        ),
        ("revoke the covering /8", Allow, false, &["10.0.0.0/8"]),
        ("allow /0", Allow, true, &["0.0.0.0/0"]),
        (
            "deny /0 (equal lengths: deny wins)",
            Deny,
            true,
            &["0.0.0.0/0"],
        ),
        ("allow the denied /16 too", Allow, true, &["10.1.0.0/16"]),
        ("undeny the /32", Deny, false, &["10.1.2.7/32"]),
        ("undeny /0", Deny, false, &["0.0.0.0/0"]),
        (
            "revoke nested prefixes in one batch",
            Allow,
            false,
            &["0.0.0.0/0", "10.1.2.0/24", "10.1.2.7/32", "10.1.0.0/16"],
        ),
        (
            "undeny the rest",
            Deny,
            false,
            &[
                "10.1.0.0/16",
                "10.2.3.6/31",
                "192.169.255.0/24",
                "192.169.255.255/32",
            ],
        ),
        (
            "revoke the rest",
            Allow,
            false,
            &[
                "10.2.0.0/16",
                "10.2.3.4/30",
                "10.2.3.128/25",
                "192.168.0.0/15",
            ],
        ),
    ];
    live.check("nothing", &probes, probes.len());
    for (name, list, add, nets) in steps {
        let nets: Vec<Ipv4Net> = nets.iter().map(|s| net(s)).collect();
        if *add {
            live.add(*list, &nets);
        } else {
            live.remove(*list, &nets);
        }
        live.check(name, &probes, probes.len());
    }
    assert!(live.allow.is_empty() && live.deny.is_empty());
    live.assert_empty_tables();
}

/// A random prefix around a few hot spots, so that prefixes overlap at every level.
fn random_prefix(rng: &mut StdRng) -> Ipv4Net {
    let base: u32 = [
        0x0a01_0200,
        0x0a01_0000,
        0x0a02_0380,
        0xc0a8_ff00,
        0x0a00_0000,
    ][rng.random_range(0..5)];
    let len = match rng.random_range(0..20) {
        0 => rng.random_range(0..8),
        1..4 => rng.random_range(8..=16),
        4..10 => rng.random_range(17..=24),
        _ => rng.random_range(25..=32),
    };
    let jitter = rng.random::<u32>() & 0x0003_ffff;
    Ipv4Net::new(Ipv4Addr::from(base ^ jitter), len)
        .unwrap()
        .trunc()
}

#[test]
fn random_live_changes_keep_the_tables_exact() {
    if !require_privileges("random_live_changes_keep_the_tables_exact") {
        return;
    }
    let seed: u64 = std::env::var("GUARD_OVERLAP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6f76_6572);
    let steps: usize = std::env::var("GUARD_OVERLAP_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut live = Live::new();
    for step in 0..steps {
        let list = if rng.random_bool(0.7) {
            List::Allow
        } else {
            List::Deny
        };
        let current: Vec<Ipv4Net> = live.set(list).iter().copied().collect();
        let changed: Vec<Ipv4Net> = if current.is_empty() || rng.random_bool(0.6) {
            let mut fresh = BTreeSet::new();
            for _ in 0..rng.random_range(1..=6) {
                let n = random_prefix(&mut rng);
                if !current.contains(&n) {
                    fresh.insert(n);
                }
            }
            let fresh: Vec<Ipv4Net> = fresh.into_iter().collect();
            live.add(list, &fresh);
            fresh
        } else {
            let mut gone = BTreeSet::new();
            for _ in 0..rng.random_range(1..=4) {
                gone.insert(current[rng.random_range(0..current.len())]);
            }
            let gone: Vec<Ipv4Net> = gone.into_iter().collect();
            live.remove(list, &gone);
            gone
        };
        let mut probes = probes_around(&changed);
        probes.extend(probes_around(
            &live.allow.iter().copied().collect::<Vec<_>>(),
        ));
        probes.extend(probes_around(
            &live.deny.iter().copied().collect::<Vec<_>>(),
        ));
        for _ in 0..64 {
            let n = random_prefix(&mut rng);
            probes.push((u32::from(n.network()) | (rng.random::<u32>() & 0xff)).to_be_bytes());
        }
        probes.sort();
        probes.dedup();
        live.check(
            &format!("step {step} (seed {seed}): {list:?} {changed:?}"),
            &probes,
            16,
        );
    }
    let allow: Vec<Ipv4Net> = live.allow.iter().copied().collect();
    let deny: Vec<Ipv4Net> = live.deny.iter().copied().collect();
    live.remove(List::Allow, &allow);
    live.remove(List::Deny, &deny);
    live.assert_empty_tables();
}

/// More /24s with longer prefixes than there are chunks: the last ones are left to the trie,
/// exactly; when chunks free up, a change that touches such a /24 brings it back to a chunk;
/// and a chunk leaked by an interrupted change is reclaimed when none is free.
#[test]
fn beyond_the_chunks_the_trie_answers_exactly() {
    if !require_privileges("beyond_the_chunks_the_trie_answers_exactly") {
        return;
    }
    let over = 8u32;
    // One /32 in each of V4_CHUNKS + `over` /24s, from 10.0.0.0 up.
    let hosts: Vec<Ipv4Net> = (0..V4_CHUNKS + over)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0001 + (i << 8)), 32).unwrap())
        .collect();
    let mut live = Live::new();
    live.add(List::Allow, &hosts);
    let trie_slots = |maps: &GuardMaps| -> Vec<u32> {
        let mut out = Vec::new();
        for r in 0x0a00..0x0b00u32 {
            let row = maps.allow_v4_rows.get(r).unwrap();
            for (s, v) in row.slots.iter().enumerate() {
                if *v > slot::MAX_MATCH && *v < slot::CHUNK_BASE {
                    out.push((r << 8) | s as u32);
                }
            }
        }
        out
    };
    let left = trie_slots(&live.k.maps);
    assert_eq!(left.len(), over as usize, "/24s left to the trie");
    // Probes in the /24s left to the trie and in chunked ones.
    let mut probes: Vec<[u8; 4]> = Vec::new();
    for s in left.iter().copied().chain([0, 1, 4_000]) {
        let base = s << 8;
        for last in [0u32, 1, 2, 255] {
            probes.push((base | last).to_be_bytes());
        }
    }
    live.check("filling every chunk", &probes, probes.len());

    // Free two chunks, then touch a /24 left to the trie: it gets a chunk back.
    live.remove(List::Allow, &hosts[..2]);
    let first = left[0];
    let extra = Ipv4Net::new(Ipv4Addr::from((first << 8) | 0x80), 25).unwrap();
    live.add(List::Allow, &[extra]);
    let now = trie_slots(&live.k.maps);
    assert!(
        !now.contains(&first),
        "{first:#x} is still left to the trie"
    );
    probes.extend([
        (first << 8 | 0x80).to_be_bytes(),
        (first << 8 | 0x7f).to_be_bytes(),
    ]);
    live.check(
        "freeing chunks and touching a /24 left to the trie",
        &probes,
        probes.len(),
    );

    // Use up the last free chunk, then leak one (a change interrupted between the row and the
    // owners): the next /24 that needs a chunk reclaims it.
    let second = now[0];
    live.add(
        List::Allow,
        &[Ipv4Net::new(Ipv4Addr::from((second << 8) | 0x80), 25).unwrap()],
    );
    let third = trie_slots(&live.k.maps)[0];
    let (row, s) = (0x0a00u32, 5usize);
    let mut r = live.k.maps.allow_v4_rows.get(row).unwrap();
    assert!(r.slots[s] >= slot::CHUNK_BASE);
    r.slots[s] = slot::TRIE;
    live.k.maps.allow_v4_rows.set(row, &r).unwrap();
    live.add(
        List::Allow,
        &[Ipv4Net::new(Ipv4Addr::from((third << 8) | 0x80), 25).unwrap()],
    );
    assert!(!trie_slots(&live.k.maps).contains(&third));
    probes.extend([
        (third << 8 | 0x80).to_be_bytes(),
        ((row << 16) | (s as u32) << 8 | 1).to_be_bytes(),
    ]);
    live.check("reclaiming a leaked chunk", &probes, probes.len());
}
