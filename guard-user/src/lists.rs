//! The allowlist and denylist: CIDR parsing and validation, and all-or-nothing changes to
//! the maps.
//!
//! This module is the only user-space code that knows how prefixes are stored (one LPM trie
//! per list and family today); callers deal in [`List`]s and [`IpNet`]s.

use std::{collections::BTreeSet, io};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use guard_common::maps::PrefixEntry;
use ipnet::IpNet;

use crate::maps::GuardMaps;

const BPF_NOEXIST: u64 = 1;

/// Which prefix list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// Sources that may reach protected ports.
    Allow,
    /// Sources dropped outright, under either policy, unless a more specific allowlist entry
    /// holds them.
    Deny,
}

impl List {
    /// `allowlist` or `denylist`.
    pub fn name(self) -> &'static str {
        match self {
            List::Allow => "allowlist",
            List::Deny => "denylist",
        }
    }
}

/// Parses one CIDR (`10.0.0.0/8`, `2001:db8::/32`) or bare address (a host prefix).
/// Host bits set (`10.0.0.1/8`) are an error that suggests the network.
pub fn parse_cidr(text: &str) -> anyhow::Result<IpNet> {
    let text = text.trim();
    let net: IpNet = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => bail!(
                "invalid CIDR {text:?}: expected ADDRESS/PREFIX such as 10.0.0.0/8 or 2001:db8::/32 \
                 (prefix at most 32 for IPv4, 128 for IPv6)"
            ),
        },
    };
    if net != net.trunc() {
        bail!(
            "invalid CIDR {text}: host bits are set; did you mean {}?",
            net.trunc()
        );
    }
    Ok(net)
}

/// Parses every argument before anything is changed; duplicates collapse.
pub fn parse_cidrs<S: AsRef<str>>(texts: &[S]) -> anyhow::Result<Vec<IpNet>> {
    if texts.is_empty() {
        bail!("no CIDR given");
    }
    let mut set = BTreeSet::new();
    for t in texts {
        set.insert(parse_cidr(t.as_ref())?);
    }
    Ok(set.into_iter().collect())
}

/// What [`allow`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Prefixes newly inserted.
    pub added: Vec<IpNet>,
    /// Prefixes that were already there.
    pub present: Vec<IpNet>,
}

fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

type TrieV4 = LpmTrie<MapData, [u8; 4], PrefixEntry>;
type TrieV6 = LpmTrie<MapData, [u8; 16], PrefixEntry>;

fn tries(maps: &mut GuardMaps, list: List) -> (&mut TrieV4, &mut TrieV6) {
    match list {
        List::Allow => (&mut maps.allow_v4, &mut maps.allow_v6),
        List::Deny => (&mut maps.deny_v4, &mut maps.deny_v6),
    }
}

fn tries_ref(maps: &GuardMaps, list: List) -> (&TrieV4, &TrieV6) {
    match list {
        List::Allow => (&maps.allow_v4, &maps.allow_v6),
        List::Deny => (&maps.deny_v4, &maps.deny_v6),
    }
}

/// Inserts `net` unless present: Ok(true) when inserted, Ok(false) when already there.
fn insert(maps: &mut GuardMaps, list: List, net: &IpNet) -> Result<bool, MapError> {
    let len = u32::from(net.prefix_len());
    let entry = PrefixEntry { prefix_len: len };
    let (v4, v6) = tries(maps, list);
    let r = match net {
        IpNet::V4(n) => v4.insert(&Key::new(len, n.addr().octets()), entry, BPF_NOEXIST),
        IpNet::V6(n) => v6.insert(&Key::new(len, n.addr().octets()), entry, BPF_NOEXIST),
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes exactly `net` (not a covering prefix).
fn remove(maps: &mut GuardMaps, list: List, net: &IpNet) -> Result<(), MapError> {
    let len = u32::from(net.prefix_len());
    let (v4, v6) = tries(maps, list);
    match net {
        IpNet::V4(n) => v4.remove(&Key::new(len, n.addr().octets())),
        IpNet::V6(n) => v6.remove(&Key::new(len, n.addr().octets())),
    }
}

/// Adds every prefix to `list`, or none: on any failure (a full map) the ones inserted by
/// this call are removed again and the error says why.
pub fn add(maps: &mut GuardMaps, list: List, nets: &[IpNet]) -> anyhow::Result<Added> {
    let mut report = Added::default();
    for net in nets {
        match insert(maps, list, net) {
            Ok(true) => report.added.push(*net),
            Ok(false) => report.present.push(*net),
            Err(e) => {
                for done in &report.added {
                    let _ = remove(maps, list, done);
                }
                let full = matches!(errno(&e), Some(libc::ENOSPC) | Some(libc::E2BIG));
                return Err(if full {
                    anyhow!(
                        "the {} {} is full ({} prefixes): nothing was added",
                        family(net),
                        list.name(),
                        capacity(net)
                    )
                } else {
                    anyhow!(e).context(format!("adding {net}: nothing was added"))
                });
            }
        }
    }
    Ok(report)
}

/// Removes every prefix from `list`, or none: each must be there exactly as given.
pub fn remove_all(maps: &mut GuardMaps, list: List, nets: &[IpNet]) -> anyhow::Result<()> {
    let mut removed = Vec::new();
    for net in nets {
        if let Err(e) = remove(maps, list, net) {
            for done in &removed {
                let _ = insert(maps, list, done);
            }
            if errno(&e) == Some(libc::ENOENT) {
                bail!("{net} is not on the {}: nothing was removed", list.name());
            }
            return Err(anyhow!(e).context(format!("removing {net}: nothing was removed")));
        }
        removed.push(*net);
    }
    Ok(())
}

/// Every prefix on `list`, IPv4 first, sorted.
pub fn entries(maps: &GuardMaps, list: List) -> anyhow::Result<Vec<IpNet>> {
    let (v4, v6) = tries_ref(maps, list);
    let mut out = BTreeSet::new();
    for key in v4.keys() {
        let key = key.with_context(|| format!("reading the IPv4 {}", list.name()))?;
        out.insert(net_of(key.data().into(), key.prefix_len())?);
    }
    for key in v6.keys() {
        let key = key.with_context(|| format!("reading the IPv6 {}", list.name()))?;
        out.insert(net_of(key.data().into(), key.prefix_len())?);
    }
    Ok(out.into_iter().collect())
}

/// The number of IPv4 and IPv6 prefixes on `list`.
pub fn sizes(maps: &GuardMaps, list: List) -> (usize, usize) {
    let (v4, v6) = tries_ref(maps, list);
    (v4.keys().count(), v6.keys().count())
}

/// Allowlists every prefix, or none.
pub fn allow(maps: &mut GuardMaps, nets: &[IpNet]) -> anyhow::Result<Added> {
    add(maps, List::Allow, nets)
}

/// Removes every prefix from the allowlist, or none.
pub fn revoke(maps: &mut GuardMaps, nets: &[IpNet]) -> anyhow::Result<()> {
    remove_all(maps, List::Allow, nets)
}

/// Every allowlisted prefix.
pub fn list(maps: &GuardMaps) -> anyhow::Result<Vec<IpNet>> {
    entries(maps, List::Allow)
}

fn net_of(addr: std::net::IpAddr, len: u32) -> anyhow::Result<IpNet> {
    IpNet::new(addr, len as u8).map_err(|e| anyhow!(io::Error::other(e)))
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

fn capacity(net: &IpNet) -> u32 {
    match net {
        IpNet::V4(_) => guard_common::maps::ALLOW_V4_MAX,
        IpNet::V6(_) => guard_common::maps::ALLOW_V6_MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_and_bare_addresses() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            parse_cidr("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
    }

    #[test]
    fn rejects_bad_cidrs_with_a_reason() {
        for bad in [
            "10.0.0.0/33",
            "foo",
            "",
            "10.0.0/8",
            "2001:db8::/129",
            "1.2.3.4/-1",
        ] {
            let e = parse_cidr(bad).unwrap_err().to_string();
            assert!(e.contains("invalid CIDR"), "{bad}: {e}");
        }
        let e = parse_cidr("10.0.0.1/8").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
    }

    #[test]
    fn parse_cidrs_is_all_or_nothing_and_dedupes() {
        assert!(parse_cidrs(&["10.0.0.0/8", "bad"]).is_err());
        assert!(parse_cidrs::<&str>(&[]).is_err());
        let v = parse_cidrs(&["10.0.0.0/8", "10.0.0.0/8", "::/0"]).unwrap();
        assert_eq!(v.len(), 2);
    }
}
