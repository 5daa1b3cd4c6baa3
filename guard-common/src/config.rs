//! The guard's live configuration: protected ports, policy and flags, one entry of the
//! config map.

use crate::ratelimit::{RatePolicy, RateSpec};

/// Largest number of protected ports an operator may configure.
pub const MAX_PORTS: usize = 16;

/// The default protected port: memcached.
pub const MEMCACHED_PORT: u16 = 11211;

/// [`GuardConfig::flags`] bit: would-be drops pass and are counted as `would_drop`.
pub const FLAG_DRY_RUN: u32 = 1;
/// [`GuardConfig::flags`] bit: the denylist has entries (lets the hot path skip its lookup).
pub const FLAG_HAS_DENY: u32 = 2;

/// [`GuardConfig::policy`]: drop every non-allowlisted datagram to a protected port.
pub const POLICY_DROP: u32 = 0;
/// [`GuardConfig::policy`]: pass non-allowlisted datagrams within the rate limits.
pub const POLICY_RATE_LIMIT: u32 = 1;

/// Default sampling of top talkers: one dropped datagram in 1,024 per CPU is recorded,
/// weighted by 1,024. A record is a hash-map lookup or insert and two atomic adds: about 54 ns
/// here (`--top-sample 1` against the default, in BPF_PROG_TEST_RUN), eight times a whole drop.
/// One in 64 spread that over a drop as about 0.8 ns, an eighth of what a drop costs above a
/// bare XDP_DROP; one in 1,024 makes it about 0.05 ns. That is the rate flow samplers use on
/// busy links (sFlow: 1 in 1,000s), and a source flooding at 100,000 datagrams per second
/// still gets about 100 samples a second. `--top-sample 1` counts every drop exactly.
pub const DEFAULT_TOP_SAMPLE: u32 = 1024;

/// Entries of the protected-port table: one byte per UDP port.
pub const PORT_ENTRIES: usize = 65536;

/// The guard's configuration, read by the XDP program on every frame.
///
/// Protected ports are a table with one byte per port, indexed by the port's two bytes as they
/// are on the wire (see [`port_index`]): the hot path tests membership with a 16-bit load from
/// the frame and one byte load, whatever the number of ports. User space keeps the set at
/// [`MAX_PORTS`] or fewer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// `POLICY_*` for sources that are not allowlisted.
    pub policy: u32,
    /// Rate limits, used under [`POLICY_RATE_LIMIT`].
    pub rate: RatePolicy,
    /// Top talkers: one dropped datagram in `top_sample` (a power of two) per CPU is recorded,
    /// weighted by `top_sample`; 0 turns recording off.
    pub top_sample: u32,
    /// Reserved, zero (keeps `ports` 8-byte aligned without implicit padding).
    pub reserved: u32,
    /// Entry [`port_index`]`(p)` is 1 when UDP port `p` is protected, else 0.
    pub ports: [u8; PORT_ENTRIES],
}

/// The index of UDP port `port` in [`GuardConfig::ports`]: its big-endian (wire) bytes read
/// as a little-endian `u16`. On the little-endian BPF target that is a plain 16-bit load of the
/// header field, with no byte swap.
#[inline(always)]
pub const fn port_index(wire: [u8; 2]) -> usize {
    u16::from_le_bytes(wire) as usize
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for GuardConfig {}

// `allowlist_only` reads `flags` and `policy` as one aligned `u64`.
const _: () = assert!(core::mem::offset_of!(GuardConfig, flags) == 0);
const _: () = assert!(core::mem::offset_of!(GuardConfig, policy) == 4);
const _: () = assert!(core::mem::align_of::<GuardConfig>() >= 8);

impl Default for GuardConfig {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl GuardConfig {
    /// No ports protected, no flags.
    pub const EMPTY: GuardConfig = GuardConfig {
        flags: 0,
        policy: POLICY_DROP,
        rate: RatePolicy {
            source: RateSpec {
                interval_ns: 0,
                tolerance_ns: 0,
            },
            prefix: RateSpec {
                interval_ns: 0,
                tolerance_ns: 0,
            },
            global: RateSpec {
                interval_ns: 0,
                tolerance_ns: 0,
            },
            prefix_v4: 24,
            prefix_v6: 64,
        },
        top_sample: 0,
        reserved: 0,
        ports: [0; PORT_ENTRIES],
    };

    /// Is UDP destination port `port` protected?
    #[inline(always)]
    pub fn protects(&self, port: u16) -> bool {
        self.protects_wire(port.to_be_bytes())
    }

    /// Is the UDP destination port whose header bytes are `wire` protected?
    #[inline(always)]
    pub fn protects_wire(&self, wire: [u8; 2]) -> bool {
        // A 16-bit index into a 65,536-entry table: no bounds check, and the verifier knows
        // the load's range. (Not an OR of the two bytes: kernels before 6.5 lose the bounds
        // of `scalar | scalar`, and then refuse the map access.)
        self.ports[port_index(wire)] != 0
    }

    /// Adds `port` to the protected set.
    pub fn protect(&mut self, port: u16) {
        self.ports[port_index(port.to_be_bytes())] = 1;
    }

    /// Empties the protected set.
    pub fn clear_ports(&mut self) {
        self.ports = [0; PORT_ENTRIES];
    }

    /// The protected ports, ascending.
    pub fn protected_ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.protects(*p))
    }

    /// Is dry-run on?
    #[inline(always)]
    pub fn dry_run(&self) -> bool {
        self.flags & FLAG_DRY_RUN != 0
    }

    /// Does the denylist have entries?
    #[inline(always)]
    pub fn has_deny(&self) -> bool {
        self.flags & FLAG_HAS_DENY != 0
    }

    /// Is every datagram judged by the allowlist alone: no denylist entries, no dry-run, the
    /// drop policy (and no other flag)? Then the classifier takes its shortest path.
    #[inline(always)]
    pub fn allowlist_only(&self) -> bool {
        // `flags` and `policy` are the first 8 bytes, both 0 then: one 64-bit load and one
        // test on the hot path instead of two loads, an OR and a zero extension.
        // SAFETY: `GuardConfig` is `repr(C)`, 8-byte aligned, and starts with these two `u32`
        // fields (asserted below); any 8 bytes are a valid `u64`.
        let head = unsafe { core::ptr::read((self as *const Self).cast::<u64>()) };
        head == 0
    }

    /// Records whether the denylist has entries.
    pub fn set_has_deny(&mut self, on: bool) {
        if on {
            self.flags |= FLAG_HAS_DENY;
        } else {
            self.flags &= !FLAG_HAS_DENY;
        }
    }

    /// Is the rate-limit policy in force?
    #[inline(always)]
    pub fn rate_limited(&self) -> bool {
        self.policy == POLICY_RATE_LIMIT
    }

    /// Turns dry-run on or off.
    pub fn set_dry_run(&mut self, on: bool) {
        if on {
            self.flags |= FLAG_DRY_RUN;
        } else {
            self.flags &= !FLAG_DRY_RUN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_table_edges() {
        let mut c = GuardConfig::EMPTY;
        for p in [0u16, 63, 64, 11211, 65535] {
            assert!(!c.protects(p));
            c.protect(p);
            assert!(c.protects(p));
        }
        assert!(!c.protects(11212));
        assert_eq!(c.protected_ports().count(), 5);
        c.clear_ports();
        assert_eq!(c.protected_ports().count(), 0);
    }

    #[test]
    fn dry_run_flag() {
        let mut c = GuardConfig::EMPTY;
        assert!(!c.dry_run());
        c.set_dry_run(true);
        assert!(c.dry_run());
        c.set_dry_run(false);
        assert!(!c.dry_run());
    }
}
