//! The allowlist: CIDR parsing and validation, and all-or-nothing changes to the maps.
//!
//! This module is the only user-space code that knows how prefixes are stored (two LPM tries
//! today); callers deal in [`IpNet`]s.

use std::{collections::BTreeSet, io};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use guard_common::maps::AllowEntry;
use ipnet::IpNet;

use crate::maps::GuardMaps;

const BPF_NOEXIST: u64 = 1;

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

enum Tries<'a> {
    V4(&'a mut LpmTrie<MapData, [u8; 4], AllowEntry>),
    V6(&'a mut LpmTrie<MapData, [u8; 16], AllowEntry>),
}

fn trie_of<'a>(maps: &'a mut GuardMaps, net: &IpNet) -> Tries<'a> {
    match net {
        IpNet::V4(_) => Tries::V4(&mut maps.allow_v4),
        IpNet::V6(_) => Tries::V6(&mut maps.allow_v6),
    }
}

/// Inserts `net` unless present: Ok(true) when inserted, Ok(false) when already there.
fn insert(maps: &mut GuardMaps, net: &IpNet) -> Result<bool, MapError> {
    let len = u32::from(net.prefix_len());
    let r = match (trie_of(maps, net), net) {
        (Tries::V4(t), IpNet::V4(n)) => t.insert(
            &Key::new(len, n.addr().octets()),
            AllowEntry::default(),
            BPF_NOEXIST,
        ),
        (Tries::V6(t), IpNet::V6(n)) => t.insert(
            &Key::new(len, n.addr().octets()),
            AllowEntry::default(),
            BPF_NOEXIST,
        ),
        _ => unreachable!("trie_of matches the family"),
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes exactly `net` (not a covering prefix).
fn remove(maps: &mut GuardMaps, net: &IpNet) -> Result<(), MapError> {
    let len = u32::from(net.prefix_len());
    match (trie_of(maps, net), net) {
        (Tries::V4(t), IpNet::V4(n)) => t.remove(&Key::new(len, n.addr().octets())),
        (Tries::V6(t), IpNet::V6(n)) => t.remove(&Key::new(len, n.addr().octets())),
        _ => unreachable!("trie_of matches the family"),
    }
}

/// Allowlists every prefix, or none: on any failure (a full map) the ones inserted by this
/// call are removed again and the error says why.
pub fn allow(maps: &mut GuardMaps, nets: &[IpNet]) -> anyhow::Result<Added> {
    let mut report = Added::default();
    for net in nets {
        match insert(maps, net) {
            Ok(true) => report.added.push(*net),
            Ok(false) => report.present.push(*net),
            Err(e) => {
                for done in &report.added {
                    let _ = remove(maps, done);
                }
                let full = matches!(errno(&e), Some(libc::ENOSPC) | Some(libc::E2BIG));
                return Err(if full {
                    anyhow!(
                        "the {} allowlist is full ({} prefixes): nothing was added",
                        family(net),
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

/// Removes every prefix, or none: each must be allowlisted exactly as given.
pub fn revoke(maps: &mut GuardMaps, nets: &[IpNet]) -> anyhow::Result<()> {
    let mut removed = Vec::new();
    for net in nets {
        if let Err(e) = remove(maps, net) {
            for done in &removed {
                let _ = insert(maps, done);
            }
            if errno(&e) == Some(libc::ENOENT) {
                bail!("{net} is not allowlisted: nothing was revoked");
            }
            return Err(anyhow!(e).context(format!("revoking {net}: nothing was revoked")));
        }
        removed.push(*net);
    }
    Ok(())
}

/// Every allowlisted prefix, IPv4 first, sorted.
pub fn list(maps: &GuardMaps) -> anyhow::Result<Vec<IpNet>> {
    let mut out = BTreeSet::new();
    for key in maps.allow_v4.keys() {
        let key = key.context("reading the IPv4 allowlist")?;
        out.insert(net_of(key.data().into(), key.prefix_len())?);
    }
    for key in maps.allow_v6.keys() {
        let key = key.context("reading the IPv6 allowlist")?;
        out.insert(net_of(key.data().into(), key.prefix_len())?);
    }
    Ok(out.into_iter().collect())
}

/// The number of IPv4 and IPv6 prefixes.
pub fn sizes(maps: &GuardMaps) -> anyhow::Result<(usize, usize)> {
    let v4 = maps.allow_v4.keys().count();
    let v6 = maps.allow_v6.keys().count();
    Ok((v4, v6))
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
