//! The loaded XDP program with private maps, for BPF_PROG_TEST_RUN tests.

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use guard_common::{Action, GuardConfig, Verdict};
use guard_user::{
    attach::sync_deny_flag,
    lists::{self, List},
    loader::{self, MapSizes},
    maps::GuardMaps,
    stats::Totals,
};
use ipnet::IpNet;

/// The interface BPF_PROG_TEST_RUN reports as ingress: the namespace's loopback.
pub const TEST_RUN_IFINDEX: u32 = 1;

/// The counters BPF_PROG_TEST_RUN frames move.
pub fn test_run_totals(maps: &GuardMaps) -> Totals {
    Totals::read_interface(maps, TEST_RUN_IFINDEX).expect("counters")
}

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;

/// A loaded program and its maps, unpinned: it disappears with the value.
pub struct Loaded {
    /// The object (owns the program).
    pub ebpf: Ebpf,
    /// Its maps.
    pub maps: GuardMaps,
    /// The test-run counters after the last frame.
    last: Totals,
}

impl Loaded {
    /// Loads the program with `sizes`, writes `config` and fills the lists.
    pub fn new(config: &GuardConfig, allow: &[IpNet], deny: &[IpNet], sizes: &MapSizes) -> Self {
        let mut ebpf = loader::load_unpinned(sizes).expect("the XDP program loads and verifies");
        let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
        maps.write_config(config).expect("config");
        if !allow.is_empty() {
            lists::add(&mut maps, List::Allow, allow).expect("allowlist");
        }
        if !deny.is_empty() {
            lists::add(&mut maps, List::Deny, deny).expect("denylist");
        }
        sync_deny_flag(&mut maps).expect("deny flag");
        let last = test_run_totals(&maps);
        Self { ebpf, maps, last }
    }

    /// Runs the program once on `frame`; returns the XDP action.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        let prog = loader::program(&mut self.ebpf).expect("program");
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
    }

    /// Runs the program once on `frame`; returns the verdict it counted (from the counters,
    /// which must move by exactly one packet of one verdict). Every test run must go through
    /// here or [`Loaded::run`] followed by [`Loaded::resync`].
    pub fn verdict(&mut self, frame: &[u8]) -> Verdict {
        let before = std::mem::take(&mut self.last);
        let action = self.run(frame);
        let after = test_run_totals(&self.maps);
        self.last = after.clone();
        let moved: Vec<Verdict> = Verdict::ALL
            .into_iter()
            .filter(|v| after.get(*v).packets != before.get(*v).packets)
            .collect();
        assert_eq!(moved.len(), 1, "one frame moved {moved:?}");
        let verdict = moved[0];
        assert_eq!(
            action,
            action_code(verdict),
            "{verdict:?} returned {action}"
        );
        verdict
    }
}

impl Loaded {
    /// Re-reads the counters after runs that did not go through [`Loaded::verdict`].
    pub fn resync(&mut self) {
        self.last = test_run_totals(&self.maps);
    }
}

/// The XDP action of a verdict.
pub fn action_code(v: Verdict) -> u32 {
    match v.action() {
        Action::Pass => XDP_PASS,
        Action::Drop => XDP_DROP,
    }
}
