//! Privilege checks, so that a missing capability is named instead of surfacing as EPERM.

use anyhow::bail;

/// CAP_NET_ADMIN: attach XDP programs.
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_ADMIN: everything BPF on older kernels, mounting bpffs.
pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_BPF: BPF maps and programs (Linux 5.8+).
pub const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Fails unless this process may use BPF maps (CAP_BPF or CAP_SYS_ADMIN).
pub fn require_bpf() -> anyhow::Result<()> {
    let caps = effective();
    if !has(caps, CAP_BPF) && !has(caps, CAP_SYS_ADMIN) {
        bail!("permission denied: guard needs CAP_BPF (or CAP_SYS_ADMIN); run it as root");
    }
    Ok(())
}

/// Fails unless this process may also attach XDP programs (CAP_NET_ADMIN).
pub fn require_attach() -> anyhow::Result<()> {
    require_bpf()?;
    if !has(effective(), CAP_NET_ADMIN) {
        bail!("permission denied: attaching XDP needs CAP_NET_ADMIN; run guard as root");
    }
    Ok(())
}
