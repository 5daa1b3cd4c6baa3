//! The allowlist module against the real maps: all-or-nothing changes, a full list (its trie
//! holds [`ALLOW_V4_MAX`] IPv4 prefixes; the direct tables never fill it up), exact revokes,
//! listing; and the loaded program follows each change.

use aya::programs::{TestRun as _, TestRunOptions};
use guard_common::{config::MEMCACHED_PORT, maps::ALLOW_V4_MAX};
use guard_tests::{
    kernel::{XDP_DROP, XDP_PASS},
    packets::{V4, table_config, v4_probe},
    privilege::require_privileges,
};
use guard_user::{
    lists as allowlist,
    loader::{self, MapSizes},
    maps::GuardMaps,
    pins::PinLayout,
};
use ipnet::IpNet;

fn fresh() -> (aya::Ebpf, GuardMaps) {
    let mut ebpf = loader::load_unpinned(&MapSizes::default()).expect("load");
    let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
    maps.write_config(&table_config()).expect("config");
    (ebpf, maps)
}

/// The program's action on a memcached probe from `source`.
fn action(ebpf: &mut aya::Ebpf, source: [u8; 4]) -> u32 {
    let frame = v4_probe(&[], V4::from(source), MEMCACHED_PORT);
    loader::program(ebpf)
        .expect("program")
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn a_full_map_is_an_error_and_the_batch_is_rolled_back() {
    if !require_privileges("a_full_map_is_an_error_and_the_batch_is_rolled_back") {
        return;
    }
    let (mut ebpf, mut maps) = fresh();
    // Fill the IPv4 trie to one short of capacity with /32s in 10.0.0.0/8.
    let fill: Vec<IpNet> = (0..ALLOW_V4_MAX - 1)
        .map(|i| IpNet::new(std::net::Ipv4Addr::from(0x0A00_0000 + i).into(), 32).unwrap())
        .collect();
    let report = allowlist::allow(&mut maps, &fill).expect("fill");
    assert_eq!(report.added.len(), fill.len());
    // A batch of three where only one fits: nothing of it stays.
    let batch = nets(&["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]);
    let err = allowlist::allow(&mut maps, &batch).unwrap_err().to_string();
    assert!(err.contains("allowlist is full"), "{err}");
    assert!(err.contains("nothing was added"), "{err}");
    let (v4, v6) = allowlist::sizes(&maps, allowlist::List::Allow);
    assert_eq!((v4, v6), (fill.len(), 0));
    // The program allows the fill, and nothing of the batch.
    assert_eq!(action(&mut ebpf, [10, 0, 0, 0]), XDP_PASS);
    assert_eq!(action(&mut ebpf, [10, 1, 255, 254]), XDP_PASS);
    assert_eq!(action(&mut ebpf, [10, 1, 255, 255]), XDP_DROP);
    for source in [[192, 0, 2, 1], [198, 51, 100, 1], [203, 0, 113, 1]] {
        assert_eq!(action(&mut ebpf, source), XDP_DROP, "{source:?}");
    }
    // The last slot is still usable, and a re-add of a present prefix is not an error.
    let one = nets(&["192.0.2.0/24"]);
    assert_eq!(allowlist::allow(&mut maps, &one).unwrap().added, one);
    assert_eq!(allowlist::allow(&mut maps, &one).unwrap().present, one);
    assert_eq!(action(&mut ebpf, [192, 0, 2, 1]), XDP_PASS);
    assert_eq!(action(&mut ebpf, [198, 51, 100, 1]), XDP_DROP);
}

#[test]
fn revoke_is_exact_and_all_or_nothing() {
    if !require_privileges("revoke_is_exact_and_all_or_nothing") {
        return;
    }
    let (mut ebpf, mut maps) = fresh();
    let set = nets(&["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"]);
    allowlist::allow(&mut maps, &set).unwrap();
    // 10.1.2.0/24 is covered by both, but was never added: revoking it is an error, and the
    // good prefix in the same call stays.
    let err = allowlist::revoke(&mut maps, &nets(&["10.0.0.0/8", "10.1.2.0/24"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("10.1.2.0/24 is not on the allowlist"), "{err}");
    assert_eq!(allowlist::list(&maps).unwrap(), set);
    allowlist::revoke(&mut maps, &nets(&["10.1.0.0/16", "2001:db8::/32"])).unwrap();
    assert_eq!(allowlist::list(&maps).unwrap(), nets(&["10.0.0.0/8"]));
    assert_eq!(action(&mut ebpf, [10, 1, 2, 3]), XDP_PASS);
    allowlist::revoke(&mut maps, &nets(&["10.0.0.0/8"])).unwrap();
    assert_eq!(action(&mut ebpf, [10, 1, 2, 3]), XDP_DROP);
}

#[test]
fn list_round_trips_edge_prefixes() {
    if !require_privileges("list_round_trips_edge_prefixes") {
        return;
    }
    let (_ebpf, mut maps) = fresh();
    let set = nets(&[
        "0.0.0.0/0",
        "255.255.255.255/32",
        "::/0",
        "ffff::1/128",
        "fe80::/10",
    ]);
    allowlist::allow(&mut maps, &set).unwrap();
    let mut want = set.clone();
    want.sort();
    assert_eq!(allowlist::list(&maps).unwrap(), want);
}

/// A guard loaded again over maps left pinned (a first attach interrupted before it pinned
/// its program) keeps the allowlist: in its trie, and in its direct tables, which are the
/// program's global data, which the loader clears and rebuilds from the trie. Also when a
/// load was interrupted after clearing them, before rebuilding them.
#[test]
fn loading_over_pinned_maps_keeps_the_tables() {
    if !require_privileges("loading_over_pinned_maps_keeps_the_tables") {
        return;
    }
    let layout = PinLayout::new(format!(
        "/sys/fs/bpf/guard-test-reload-{}",
        std::process::id()
    ));
    /// Removes the pins, even when the test fails.
    struct Unload<'a>(&'a PinLayout);
    impl Drop for Unload<'_> {
        fn drop(&mut self) {
            let _ = guard_user::attach::unload(self.0);
        }
    }
    layout.prepare().expect("pin layout");
    let _unload = Unload(&layout);
    let allowed = nets(&["10.1.2.3/32", "10.9.0.0/16"]);
    let sources = [
        ([10, 1, 2, 3], XDP_PASS),
        ([10, 9, 200, 1], XDP_PASS),
        ([10, 1, 2, 4], XDP_DROP),
    ];
    {
        let mut ebpf = loader::load_pinned(&layout, &MapSizes::default()).expect("load");
        let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
        maps.write_config(&table_config()).expect("config");
        allowlist::allow(&mut maps, &allowed).expect("allow");
        for (source, expected) in sources {
            assert_eq!(action(&mut ebpf, source), expected, "{source:?}");
        }
    }
    for round in ["a reload", "a reload over cleared tables"] {
        if round == "a reload over cleared tables" {
            let maps = GuardMaps::open(&layout).expect("pinned maps");
            let rows = maps.allow_v4_rows.mapped().expect("rows");
            // SAFETY: the mapping is writable and that long; no program runs on it.
            unsafe { std::ptr::write_bytes(rows.as_ptr(), 0, rows.len()) };
        }
        let mut ebpf = loader::load_pinned(&layout, &MapSizes::default()).expect("load again");
        let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
        // The config is global data too; `guard attach` writes it after every load.
        maps.write_config(&table_config()).expect("config");
        assert_eq!(allowlist::list(&maps).unwrap(), allowed, "{round}");
        for (source, expected) in sources {
            assert_eq!(
                action(&mut ebpf, source),
                expected,
                "{source:?} after {round}"
            );
        }
    }
}

/// Unpinned loads pin the tables' maps for the length of the load only.
#[test]
fn unpinned_loads_leave_no_pins() {
    if !require_privileges("unpinned_loads_leave_no_pins") {
        return;
    }
    let (_ebpf, _maps) = fresh();
    let ours = format!("guard-load-{}-", std::process::id());
    let left: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .expect("bpffs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&ours))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
