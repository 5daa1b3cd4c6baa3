//! guard's XDP program loaded for the bench through guard-user's public API: unpinned, with
//! private maps, so that nothing touches a guard the host may run.

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};

use anyhow::{Context as _, ensure};
use aya::{
    Ebpf,
    maps::{MapFd, MapInfo},
    programs::{TestRun as _, TestRunOptions},
};
use guard_common::{GuardConfig, Verdict, config::MEMCACHED_PORT};
use guard_user::{
    lists::{self, List},
    loader::{self, MapSizes},
    maps::GuardMaps,
    policy::{self, PolicyKind, RateArgs},
    stats::Totals,
};
use ipnet::IpNet;
use serde_json::{Value, json};

use super::bpf;

/// The interface BPF_PROG_TEST_RUN reports as ingress (the loopback).
const TEST_RUN_IFINDEX: u32 = 1;

/// guard's policy for sources that are not allowlisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Drop them (the default).
    Drop,
    /// Rate-limit them with guard's default limits (10/20 per source, 100/200 per /24,
    /// 1000/2000 global).
    RateLimit,
    /// Drop them, and record every drop in top talkers (`--top-sample 1`): what one record
    /// costs.
    DropRecordEvery,
}

/// The configuration `guard attach` writes (port 11211, top talkers sampled 1 in 1,024), with
/// `policy`.
pub fn config(policy: Policy) -> anyhow::Result<GuardConfig> {
    let mut c = GuardConfig::EMPTY;
    c.protect(MEMCACHED_PORT);
    let kind = match policy {
        Policy::Drop | Policy::DropRecordEvery => PolicyKind::Drop,
        Policy::RateLimit => PolicyKind::RateLimit,
    };
    c.top_sample = match policy {
        Policy::DropRecordEvery => 1,
        Policy::Drop | Policy::RateLimit => guard_common::config::DEFAULT_TOP_SAMPLE,
    };
    policy::apply(&mut c, kind, &RateArgs::default())?;
    Ok(c)
}

/// A loaded guard with its maps.
pub struct Instance {
    ebpf: Ebpf,
    /// Its maps.
    pub maps: GuardMaps,
    policy: Option<Policy>,
}

impl Instance {
    /// Loads guard with default map sizes and allowlists `allow`.
    pub fn load(allow: &[IpNet], policy: Policy) -> anyhow::Result<Self> {
        Self::load_object(guard_user::object::OBJECT, allow, policy)
    }

    /// As [`Instance::load`], for another build of guard's BPF object (8-byte aligned).
    pub fn load_object(object: &[u8], allow: &[IpNet], policy: Policy) -> anyhow::Result<Self> {
        let mut ebpf = loader::load_unpinned_object(object, &MapSizes::default())?;
        let maps = GuardMaps::take(&mut ebpf)?;
        let mut me = Self {
            ebpf,
            maps,
            policy: None,
        };
        me.set_policy(policy)?;
        if !allow.is_empty() {
            lists::add(&mut me.maps, List::Allow, allow)?;
        }
        Ok(me)
    }

    /// Switches the policy (a config map write) unless it is already in force.
    pub fn set_policy(&mut self, policy: Policy) -> anyhow::Result<()> {
        if self.policy != Some(policy) {
            self.maps.write_config(&config(policy)?)?;
            self.policy = Some(policy);
        }
        Ok(())
    }

    /// The program's fd, to attach it.
    pub fn prog_fd(&mut self) -> anyhow::Result<BorrowedFd<'_>> {
        Ok(loader::program(&mut self.ebpf)?.fd()?.as_fd())
    }

    /// BPF_PROG_TEST_RUN (through aya's `TestRun`) of `frame`, `repeat` times: the XDP action
    /// and the kernel's mean nanoseconds per run.
    pub fn run(&mut self, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, u32)> {
        let prog = loader::program(&mut self.ebpf)?;
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN of guard")?;
        Ok((r.return_value, r.duration.as_nanos() as u32))
    }

    /// Counters of test-run frames.
    pub fn test_run_totals(&self) -> anyhow::Result<Totals> {
        Totals::read_interface(&self.maps, TEST_RUN_IFINDEX)
    }

    /// Runs `frame` once and checks that guard counted it as `expect`.
    pub fn verify(&mut self, frame: &[u8], expect: Verdict) -> anyhow::Result<()> {
        let before = self.test_run_totals()?;
        self.run(frame, 1)?;
        let after = self.test_run_totals()?;
        let moved: Vec<Verdict> = Verdict::ALL
            .into_iter()
            .filter(|v| after.get(*v).packets != before.get(*v).packets)
            .collect();
        ensure!(
            moved == [expect],
            "the frame was counted as {moved:?}, not {expect:?}"
        );
        Ok(())
    }

    /// A new fd of the program's map named `name` (as the kernel knows it: at most 15
    /// characters).
    pub fn map_fd(&mut self, name: &str) -> anyhow::Result<MapFd> {
        let info = loader::program(&mut self.ebpf)?.info()?;
        for id in info.map_ids()?.unwrap_or_default() {
            let map = MapInfo::from_id(id)?;
            if map.name_as_str() == Some(name) {
                return Ok(map.fd()?);
            }
        }
        anyhow::bail!("guard's program has no map named {name}")
    }

    /// Loads the bench's reference program (`bpf::reference`, the least work of the targets)
    /// on this guard's own IPv4 allowlist tables. The program holds its maps: only its fd is
    /// kept.
    pub fn load_reference(&mut self) -> anyhow::Result<OwnedFd> {
        let rows = self.map_fd(guard_common::maps::ALLOW_V4_ROWS)?;
        let chunks = self.map_fd(guard_common::maps::ALLOW_V4_CHUNKS)?;
        let counters = bpf::create_percpu_array(4).context("the reference's counters")?;
        Ok(bpf::load_xdp(
            "gb_reference",
            &bpf::reference(bpf::ReferenceMaps {
                rows: rows.as_fd().as_raw_fd(),
                chunks: chunks.as_fd().as_raw_fd(),
                counters: counters.as_raw_fd(),
            }),
        )?)
    }

    /// Instruction counts and sizes of the loaded program.
    pub fn facts(&mut self) -> anyhow::Result<Value> {
        let info = loader::program(&mut self.ebpf)?.info()?;
        Ok(json!({
            "xlated_insns": info.size_translated().map(|b| b / 8),
            "jited_bytes": info.size_jitted(),
            "verified_insns": info.verified_instruction_count(),
        }))
    }
}
