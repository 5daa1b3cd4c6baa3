//! Facts about the machine and the software under test, for the report.

use std::{fs, process::Command};

use serde::Serialize;

use super::{sys, xdpfilter};

/// What the report says about where it ran.
#[derive(Debug, Serialize)]
pub struct Facts {
    /// UTC time the run started.
    pub date: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPU model name.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Whether the kernel reports a hardware PMU ("PMU not available" in dmesg otherwise).
    pub virtualization: String,
    /// Spectre v2 mitigation.
    pub spectre_v2: String,
    /// Speculative return stack overflow (SRSO) mitigation.
    pub srso: String,
    /// Indirect target selection (ITS) mitigation.
    pub its: String,
    /// Clock source.
    pub clocksource: String,
    /// Whether the BPF JIT is on (`net.core.bpf_jit_enable`).
    pub bpf_jit: String,
    /// rustc.
    pub rustc: String,
    /// aya (from Cargo.lock).
    pub aya: String,
    /// xdp-tools.
    pub xdp_tools: String,
    /// nftables.
    pub nft: String,
    /// The commit of guard measured (`+dirty` with uncommitted changes to guard's crates).
    pub commit: String,
    /// Load average when the run started.
    pub loadavg_start: String,
    /// Load average when it ended.
    pub loadavg_end: String,
    /// How long the bench itself ran, seconds (without the build before it).
    pub elapsed_s: f64,
}

fn read(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

fn lock_version(krate: &str) -> String {
    let lock = read(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"));
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == format!("name = \"{krate}\"")
            && let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = "))
        {
            return v.trim_matches('"').to_owned();
        }
    }
    "?".into()
}

/// Collects the facts (the end load average and the elapsed time are filled in later).
pub fn collect() -> Facts {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let hypervisor = if cpuinfo.contains(" hypervisor") {
        "virtual machine (hypervisor flag set)"
    } else {
        "no hypervisor flag"
    };
    // Only guard's own code counts: the bench and its report may be work in progress.
    let status = output(
        "git",
        &[
            "status",
            "--porcelain",
            "--",
            "../guard-ebpf",
            "../guard-common",
            "../guard-user",
        ],
    );
    let dirty = status != "?" && !status.is_empty();
    let commit =
        output("git", &["rev-parse", "--short", "HEAD"]) + if dirty { "+dirty" } else { "" };
    Facts {
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        kernel: read("/proc/sys/kernel/osrelease"),
        cpu,
        cpus: sys::cpus(),
        mem_gib: sys::meminfo("MemTotal").unwrap_or(0) as f64 / f64::from(1u32 << 30),
        virtualization: hypervisor.into(),
        spectre_v2: read("/sys/devices/system/cpu/vulnerabilities/spectre_v2"),
        srso: read("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow"),
        its: read("/sys/devices/system/cpu/vulnerabilities/indirect_target_selection"),
        clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        bpf_jit: read("/proc/sys/net/core/bpf_jit_enable"),
        rustc: output("rustc", &["--version"]),
        aya: lock_version("aya"),
        xdp_tools: xdpfilter::version().unwrap_or_else(|| "not installed".into()),
        nft: output("nft", &["--version"]),
        commit,
        loadavg_start: sys::loadavg(),
        loadavg_end: String::new(),
        elapsed_s: 0.0,
    }
}

impl Facts {
    /// The speculation mitigations that make calls and returns dear, in words ("retpolines,
    /// ITS \"Mitigation: Aligned branch/return thunks\""), or `None` when the kernel reports
    /// none of them.
    pub fn costly_mitigations(&self) -> Option<String> {
        let mut found = Vec::new();
        if self.spectre_v2.contains("Retpolines") {
            found.push("retpolines".to_owned());
        }
        for (name, state) in [("SRSO", &self.srso), ("ITS", &self.its)] {
            if state.starts_with("Mitigation") {
                found.push(format!("{name} \"{state}\""));
            }
        }
        (!found.is_empty()).then(|| found.join(", "))
    }
}
