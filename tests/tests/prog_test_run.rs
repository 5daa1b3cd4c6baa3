//! The loaded XDP program on the table of crafted frames, through BPF_PROG_TEST_RUN: every
//! in-kernel verdict must equal the host classifier's (and the table's), and the counters must
//! move exactly as the verdicts say.

use std::collections::HashMap;

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use guard_common::{Action, GuardConfig, Verdict, verdict::Counter};
use guard_tests::{
    kernel::test_run_totals,
    packets::{
        Case, HostBuckets, HostLists, cases, host_verdict, table_allowlist, table_config,
        truncations,
    },
    privilege::require_privileges,
};
use guard_user::{
    lists as allowlist,
    loader::{self, MapSizes},
    maps::GuardMaps,
};
use ipnet::IpNet;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// BPF_PROG_TEST_RUN refuses XDP frames shorter than an Ethernet header.
const MIN_TEST_RUN_LEN: usize = 14;

struct Loaded {
    ebpf: Ebpf,
    maps: GuardMaps,
}

fn load(config: &GuardConfig, allow: &[IpNet]) -> Loaded {
    let mut ebpf =
        loader::load_unpinned(&MapSizes::default()).expect("the XDP program loads and verifies");
    let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
    maps.write_config(config).expect("config");
    if !allow.is_empty() {
        allowlist::allow(&mut maps, allow).expect("allowlist");
    }
    Loaded { ebpf, maps }
}

fn run(loaded: &mut Loaded, frame: &[u8]) -> u32 {
    let prog = loader::program(&mut loaded.ebpf).expect("program");
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    result.return_value
}

fn action_code(v: Verdict) -> u32 {
    match v.action() {
        Action::Pass => XDP_PASS,
        Action::Drop => XDP_DROP,
    }
}

/// Runs every case; returns the mismatches and the counters each verdict should have.
fn check(
    loaded: &mut Loaded,
    config: &GuardConfig,
    allow: &[IpNet],
    table: &[Case],
) -> (Vec<String>, HashMap<Verdict, Counter>) {
    let host = HostLists::new(allow);
    let buckets = HostBuckets::at(1);
    let mut wrong = Vec::new();
    let mut expected: HashMap<Verdict, Counter> = HashMap::new();
    for c in table.iter().filter(|c| c.frame.len() >= MIN_TEST_RUN_LEN) {
        let model = host_verdict(&c.frame, config, &host, &buckets);
        let want = c.expected.dry_run(config.dry_run());
        if model != want {
            wrong.push(format!(
                "{}: table says {want:?}, host classifier {model:?}",
                c.name
            ));
        }
        let before = test_run_totals(&loaded.maps);
        let got = run(loaded, &c.frame);
        let after = test_run_totals(&loaded.maps);
        if got != action_code(model) {
            wrong.push(format!(
                "{}: kernel returned {got}, host classifier {model:?}",
                c.name
            ));
        }
        // Exactly one slot moved, the model's, by one packet and the frame's length.
        for v in Verdict::ALL {
            let (b, a) = (before.get(v), after.get(v));
            let (dp, db) = (a.packets - b.packets, a.bytes - b.bytes);
            let (wp, wb) = if v == model {
                (1, c.frame.len() as u64)
            } else {
                (0, 0)
            };
            if (dp, db) != (wp, wb) {
                wrong.push(format!(
                    "{}: counter {} moved by {dp} packets/{db} bytes, expected {wp}/{wb} (kernel verdict differs from {model:?})",
                    c.name,
                    v.name()
                ));
            }
        }
        let e = expected.entry(model).or_default();
        e.packets += 1;
        e.bytes += c.frame.len() as u64;
    }
    (wrong, expected)
}

#[test]
fn kernel_verdicts_equal_the_host_classifier_on_the_table() {
    if !require_privileges("kernel_verdicts_equal_the_host_classifier_on_the_table") {
        return;
    }
    let (config, allow) = (table_config(), table_allowlist());
    let mut loaded = load(&config, &allow);
    let table = cases();
    let (wrong, expected) = check(&mut loaded, &config, &allow, &table);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let totals = test_run_totals(&loaded.maps);
    for v in Verdict::ALL {
        assert_eq!(
            totals.get(v),
            expected.get(&v).copied().unwrap_or_default(),
            "{}",
            v.name()
        );
    }
    // The table exercises every verdict of the drop policy; would_drop has the dry-run test,
    // the rate-limit and denylist verdicts their own files.
    let elsewhere = [
        Verdict::WouldDrop,
        Verdict::RatePassed,
        Verdict::RateLimited,
        Verdict::Denied,
    ];
    for v in Verdict::ALL.iter().filter(|v| !elsewhere.contains(v)) {
        assert!(expected.contains_key(v), "no case for {v:?}");
    }
}

#[test]
fn kernel_verdicts_equal_the_host_classifier_on_every_truncation() {
    if !require_privileges("kernel_verdicts_equal_the_host_classifier_on_every_truncation") {
        return;
    }
    let (config, allow) = (table_config(), table_allowlist());
    let mut loaded = load(&config, &allow);
    let (wrong, _) = check(&mut loaded, &config, &allow, &truncations());
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn dry_run_in_the_kernel_passes_and_counts_would_drop() {
    if !require_privileges("dry_run_in_the_kernel_passes_and_counts_would_drop") {
        return;
    }
    let mut config = table_config();
    config.set_dry_run(true);
    let allow = table_allowlist();
    let mut loaded = load(&config, &allow);
    let (wrong, expected) = check(&mut loaded, &config, &allow, &cases());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(expected[&Verdict::WouldDrop].packets > 0);
    assert!(!expected.contains_key(&Verdict::DroppedNotAllowlisted));
}

#[test]
fn cidr_edges_in_the_kernel() {
    if !require_privileges("cidr_edges_in_the_kernel") {
        return;
    }
    let config = table_config();
    for set in [
        vec!["0.0.0.0/0"],
        vec!["::/0"],
        vec!["203.0.113.9/32", "2001:db8:b::1/128"],
        vec!["10.0.0.0/8", "10.1.2.0/24", "10.1.2.3/32"],
        vec![],
    ] {
        let allow: Vec<IpNet> = set.iter().map(|s| s.parse().unwrap()).collect();
        let mut loaded = load(&config, &allow);
        // Against this allowlist the table's expectations no longer hold; the host
        // classifier is the oracle.
        let host = HostLists::new(&allow);
        let buckets = HostBuckets::at(1);
        let table: Vec<Case> = cases()
            .into_iter()
            .map(|mut c| {
                c.expected = host_verdict(&c.frame, &config, &host, &buckets);
                c
            })
            .collect();
        let (wrong, _) = check(&mut loaded, &config, &allow, &table);
        assert!(wrong.is_empty(), "allowlist {set:?}:\n{}", wrong.join("\n"));
    }
}

#[test]
fn live_changes_to_ports_and_allowlist_take_effect() {
    if !require_privileges("live_changes_to_ports_and_allowlist_take_effect") {
        return;
    }
    use guard_tests::packets::{V4, V4_OTHER, v4_probe};
    let mut config = table_config();
    let mut loaded = load(&config, &[]);
    let probe = v4_probe(&[], V4::from(V4_OTHER), 11211);
    assert_eq!(run(&mut loaded, &probe), XDP_DROP);
    let other: IpNet = "203.0.113.0/24".parse().unwrap();
    allowlist::allow(&mut loaded.maps, &[other]).unwrap();
    assert_eq!(run(&mut loaded, &probe), XDP_PASS);
    allowlist::revoke(&mut loaded.maps, &[other]).unwrap();
    assert_eq!(run(&mut loaded, &probe), XDP_DROP);
    config.clear_ports();
    config.protect(11212);
    loaded.maps.write_config(&config).unwrap();
    assert_eq!(run(&mut loaded, &probe), XDP_PASS);
    assert_eq!(
        run(&mut loaded, &v4_probe(&[], V4::from(V4_OTHER), 11212)),
        XDP_DROP
    );
}

#[test]
fn unpinned_load_leaves_nothing_on_bpffs() {
    if !require_privileges("unpinned_load_leaves_nothing_on_bpffs") {
        return;
    }
    let _loaded = load(&table_config(), &table_allowlist());
    for name in guard_user::maps::MAP_NAMES {
        let path = std::path::Path::new("/sys/fs/bpf").join(name);
        assert!(
            !path.exists(),
            "{} was pinned by a test load",
            path.display()
        );
    }
}
