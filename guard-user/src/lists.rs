//! The allowlist and denylist: CIDR parsing and validation, and all-or-nothing changes to
//! the maps.
//!
//! This module is the only user-space code that knows how prefixes are stored; callers deal
//! in [`List`]s and [`IpNet`]s. Each list keeps its prefixes in one LPM trie per family: the
//! set of record (listing, sizes, capacity) and the IPv6 lookup. IPv4 sources are looked up
//! in direct tables computed from the prefixes, maintained by the `direct` submodule.

mod direct;

use std::{
    collections::{BTreeSet, HashSet},
    io,
    os::fd::AsFd as _,
};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{IterableMap as _, LpmTrie, MapData, MapError, lpm_trie::Key};
use guard_common::maps::PrefixEntry;
use ipnet::{IpNet, Ipv4Net};

use crate::{maps::GuardMaps, sys};

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
/// Host bits set (`10.0.0.1/8`) are an error that suggests the network. Zero-padded octets
/// are read as decimal (`010.0.0.0/8` is 10.0.0.0/8): [`parse_new_cidr`], for what an
/// operator types, refuses them.
pub fn parse_cidr(text: &str) -> anyhow::Result<IpNet> {
    let text = text.trim();
    // A bare address with zero-padded octets: std refuses what ipnet reads as decimal.
    let as_prefix;
    let text = if zero_padded_octet(text).is_some() && !text.contains('/') {
        as_prefix = format!("{text}/{}", if text.contains(':') { 128 } else { 32 });
        as_prefix.as_str()
    } else {
        text
    };
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

/// The first zero-padded decimal part of a dotted quad (`010` in `010.0.0.1`), or of a prefix
/// length (`/08`), if any.
fn zero_padded_octet(text: &str) -> Option<&str> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    // The dotted part: all of an IPv4 address, the tail of an IPv6 one (`::ffff:10.0.0.1`).
    let dotted = addr.rsplit(':').next().unwrap_or(addr);
    let parts = dotted.contains('.').then(|| dotted.split('.'));
    parts
        .into_iter()
        .flatten()
        .chain(len)
        .find(|p| p.len() > 1 && p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses a prefix an operator adds on the command line: [`parse_cidr`], refusing what
/// [`doubt`] finds. Removal and config files take any prefix [`parse_cidr`] takes, so that
/// entries added before these checks still load and can still be removed.
pub fn parse_new_cidr(text: &str) -> anyhow::Result<IpNet> {
    let net = parse_cidr(text)?;
    if let Some(why) = doubt(text.trim(), net) {
        bail!("{why}");
    }
    Ok(net)
}

/// Why a valid prefix is probably not what its writer meant, if it is not:
/// - zero-padded octets (`010.0.0.1`), which other tools read as octal;
/// - an IPv4-mapped IPv6 prefix (`::ffff:10.0.0.1`), which matches nothing: IPv4 clients'
///   packets carry their IPv4 address, and the kernel drops IPv6 packets from mapped ones.
pub fn doubt(text: &str, net: IpNet) -> Option<String> {
    if let Some(octet) = zero_padded_octet(text) {
        return Some(format!(
            "{text:?}: the octet {octet:?} has a leading zero, which some tools read as octal \
             (guard reads {net}); write it without"
        ));
    }
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(ipv4) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return Some(format!(
            "{net} is an IPv4-mapped IPv6 prefix, which no packet carries as its source: \
             IPv4 clients' datagrams carry {ipv4}; use that instead"
        ));
    }
    None
}

/// Parses every argument before anything is changed; duplicates collapse.
pub fn parse_cidrs<S: AsRef<str>>(texts: &[S]) -> anyhow::Result<Vec<IpNet>> {
    parse_all(texts, parse_cidr)
}

/// [`parse_cidrs`] for prefixes to add: each by [`parse_new_cidr`].
pub fn parse_new_cidrs<S: AsRef<str>>(texts: &[S]) -> anyhow::Result<Vec<IpNet>> {
    parse_all(texts, parse_new_cidr)
}

fn parse_all<S: AsRef<str>>(
    texts: &[S],
    parse: fn(&str) -> anyhow::Result<IpNet>,
) -> anyhow::Result<Vec<IpNet>> {
    if texts.is_empty() {
        bail!("no CIDR given");
    }
    let mut set = BTreeSet::new();
    for t in texts {
        set.insert(parse(t.as_ref())?);
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

/// One list's maps.
struct ListMaps<'m> {
    v4: direct::Tables<'m>,
    v6: &'m mut TrieV6,
}

fn list_maps(maps: &mut GuardMaps, list: List) -> ListMaps<'_> {
    match list {
        List::Allow => ListMaps {
            v4: direct::Tables {
                rows: &maps.allow_v4_rows,
                chunks: &maps.allow_v4_chunks,
                owners: &maps.allow_v4_owners,
                trie: &mut maps.allow_v4,
            },
            v6: &mut maps.allow_v6,
        },
        List::Deny => ListMaps {
            v4: direct::Tables {
                rows: &maps.deny_v4_rows,
                chunks: &maps.deny_v4_chunks,
                owners: &maps.deny_v4_owners,
                trie: &mut maps.deny_v4,
            },
            v6: &mut maps.deny_v6,
        },
    }
}

fn tries_ref(maps: &GuardMaps, list: List) -> (&TrieV4, &TrieV6) {
    match list {
        List::Allow => (&maps.allow_v4, &maps.allow_v6),
        List::Deny => (&maps.deny_v4, &maps.deny_v6),
    }
}

/// The `Match` (longest matching prefix length plus one, 0 for none) of the first
/// `prefix_len` bits of `addr` in `trie`.
fn trie_lookup<const N: usize>(
    trie: &LpmTrie<MapData, [u8; N], PrefixEntry>,
    addr: [u8; N],
    prefix_len: u32,
) -> anyhow::Result<u32> {
    match trie.get(&Key::new(prefix_len, addr), 0) {
        Ok(e) => Ok(e.prefix_len + 1),
        Err(MapError::KeyNotFound) => Ok(0),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(0),
        Err(e) => Err(anyhow!(e).context("looking up a prefix")),
    }
}

/// A trie's keys (prefix length, then the address) and values, packed for a batched call.
fn trie_batch<const N: usize>(nets: &[(u8, [u8; N])]) -> (Vec<u8>, Vec<u8>) {
    let mut keys = Vec::with_capacity(nets.len() * (4 + N));
    let mut values = Vec::with_capacity(nets.len() * 4);
    for (len, addr) in nets {
        keys.extend_from_slice(&u32::from(*len).to_ne_bytes());
        keys.extend_from_slice(addr);
        values.extend_from_slice(&u32::from(*len).to_ne_bytes());
    }
    (keys, values)
}

/// Kernels without batched operations on LPM tries (before 5.13?) answer `ENOTSUPP`; the
/// tries are then changed and read one element at a time.
fn unsupported(e: &io::Error) -> bool {
    const ENOTSUPP: i32 = 524;
    matches!(
        e.raw_os_error(),
        Some(ENOTSUPP) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

fn io_error(e: MapError) -> io::Error {
    match e {
        MapError::SyscallError(s) => s.io_error,
        e => io::Error::other(e),
    }
}

/// Inserts the prefixes that are not there yet, in order: for each, whether it was inserted
/// (false: already there). On a failure, returns the index of the prefix that failed and the
/// error, with the ones inserted before it still in.
///
/// A few prefixes are inserted one by one with `BPF_NOEXIST`. Many are checked against the
/// trie's keys (read in one batched call) and the new ones inserted in one batched call: the
/// kernel takes no `BPF_NOEXIST` in a batch.
fn trie_insert<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], PrefixEntry>,
    nets: &[(u8, [u8; N])],
) -> Result<Vec<bool>, (Vec<bool>, usize, io::Error)> {
    const ONE_BY_ONE: usize = 64;
    if nets.len() <= ONE_BY_ONE {
        return trie_insert_one_by_one(trie, nets);
    }
    let mut inserted = Vec::with_capacity(nets.len());
    let present: HashSet<(u32, [u8; N])> = match trie_entries(trie) {
        Ok(keys) => keys.into_iter().collect(),
        Err(e) => return Err((inserted, 0, e)),
    };
    let mut seen = HashSet::new();
    let fresh: Vec<(u8, [u8; N])> = nets
        .iter()
        .filter(|(len, addr)| {
            let key = (u32::from(*len), *addr);
            let new = !present.contains(&key) && seen.insert(key);
            inserted.push(new);
            new
        })
        .copied()
        .collect();
    let (keys, values) = trie_batch(&fresh);
    if let Err(e) = sys::map_update_batch(trie.map().fd().as_fd(), &keys, &values, fresh.len(), 0) {
        if e.done == 0 && unsupported(&e.error) {
            return trie_insert_one_by_one(trie, nets);
        }
        // The prefix that failed, as an index into `nets`, and what went in before it.
        let at = inserted
            .iter()
            .enumerate()
            .filter(|(_, new)| **new)
            .nth(e.done)
            .map_or(nets.len() - 1, |(i, _)| i);
        let mut done = inserted;
        done.truncate(at);
        return Err((done, at, e.error));
    }
    Ok(inserted)
}

fn trie_insert_one_by_one<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], PrefixEntry>,
    nets: &[(u8, [u8; N])],
) -> Result<Vec<bool>, (Vec<bool>, usize, io::Error)> {
    let mut inserted = Vec::with_capacity(nets.len());
    for (at, (len, addr)) in nets.iter().enumerate() {
        let len = u32::from(*len);
        let entry = PrefixEntry { prefix_len: len };
        match trie.insert(&Key::new(len, *addr), entry, BPF_NOEXIST) {
            Ok(()) => inserted.push(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => inserted.push(false),
            Err(e) => return Err((inserted, at, io_error(e))),
        }
    }
    Ok(inserted)
}

/// Deletes the prefixes, in order. On a failure, returns the index of the prefix that failed
/// and the error, with the ones before it deleted.
fn trie_delete<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], PrefixEntry>,
    nets: &[(u8, [u8; N])],
) -> Result<(), (usize, io::Error)> {
    let (keys, _) = trie_batch(nets);
    match sys::map_delete_batch(trie.map().fd().as_fd(), &keys, nets.len()) {
        Ok(()) => Ok(()),
        Err(e) if e.done == 0 && unsupported(&e.error) => {
            for (at, (len, addr)) in nets.iter().enumerate() {
                trie.remove(&Key::new(u32::from(*len), *addr))
                    .map_err(|e| (at, io_error(e)))?;
            }
            Ok(())
        }
        Err(e) => Err((e.done, e.error)),
    }
}

/// Re-inserts prefixes (a rollback), best effort.
fn trie_restore<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], PrefixEntry>,
    nets: &[(u8, [u8; N])],
) {
    let (keys, values) = trie_batch(nets);
    if let Err(e) = sys::map_update_batch(trie.map().fd().as_fd(), &keys, &values, nets.len(), 0)
        && e.done == 0
        && unsupported(&e.error)
    {
        for (len, addr) in nets {
            let len = u32::from(*len);
            let _ = trie.insert(&Key::new(len, *addr), PrefixEntry { prefix_len: len }, 0);
        }
    }
}

/// Every prefix of a trie.
fn trie_entries<const N: usize>(
    trie: &LpmTrie<MapData, [u8; N], PrefixEntry>,
) -> io::Result<Vec<(u32, [u8; N])>> {
    let keys = match sys::map_lookup_all(trie.map().fd().as_fd(), 4 + N, 4, 1 << 14) {
        Ok((keys, _)) => keys,
        Err(e) if unsupported(&e) => {
            return trie
                .keys()
                .map(|k| {
                    let k = k.map_err(io_error)?;
                    Ok((k.prefix_len(), k.data()))
                })
                .collect();
        }
        Err(e) => return Err(e),
    };
    Ok(keys
        .chunks_exact(4 + N)
        .map(|k| {
            let len = u32::from_ne_bytes(k[..4].try_into().expect("4 bytes"));
            (len, k[4..].try_into().expect("N bytes"))
        })
        .collect())
}

/// A list's prefixes split by family, as trie keys, with their positions in the request.
#[derive(Default)]
struct Split {
    v4: Vec<Ipv4Net>,
    v4_keys: Vec<(u8, [u8; 4])>,
    v4_at: Vec<usize>,
    v6_keys: Vec<(u8, [u8; 16])>,
    v6_at: Vec<usize>,
}

fn split(nets: &[IpNet]) -> Split {
    let mut s = Split::default();
    for (i, net) in nets.iter().enumerate() {
        match net {
            IpNet::V4(n) => {
                s.v4.push(*n);
                s.v4_keys.push((n.prefix_len(), n.network().octets()));
                s.v4_at.push(i);
            }
            IpNet::V6(n) => {
                s.v6_keys.push((n.prefix_len(), n.network().octets()));
                s.v6_at.push(i);
            }
        }
    }
    s
}

fn pick<T: Clone>(items: &[T], keep: &[bool]) -> Vec<T> {
    items
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(t, _)| t.clone())
        .collect()
}

/// Adds every prefix to `list`, or none: on any failure (a full map) the ones inserted by
/// this call are removed again and the error says why.
///
/// The tries change first, then the IPv4 direct tables, for every IPv4 prefix given (also
/// those already listed: that repairs tables a change interrupted midway left behind).
pub fn add(maps: &mut GuardMaps, list: List, nets: &[IpNet]) -> anyhow::Result<Added> {
    let s = split(nets);
    let mut m = list_maps(maps, list);
    let failed = |net: &IpNet, e: io::Error| {
        let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::E2BIG));
        if full {
            anyhow!(
                "the {} {} is full ({} prefixes): nothing was added",
                family(net),
                list.name(),
                capacity(net)
            )
        } else {
            anyhow!(e).context(format!("adding {net}: nothing was added"))
        }
    };
    let new_v4 = match trie_insert(m.v4.trie, &s.v4_keys) {
        Ok(inserted) => inserted,
        Err((inserted, at, e)) => {
            let _ = trie_delete(m.v4.trie, &pick(&s.v4_keys, &inserted));
            return Err(failed(&nets[s.v4_at[at]], e));
        }
    };
    let new_v6 = match trie_insert(m.v6, &s.v6_keys) {
        Ok(inserted) => inserted,
        Err((inserted, at, e)) => {
            let _ = trie_delete(m.v6, &pick(&s.v6_keys, &inserted));
            let _ = trie_delete(m.v4.trie, &pick(&s.v4_keys, &new_v4));
            return Err(failed(&nets[s.v6_at[at]], e));
        }
    };
    if let Err(e) = direct::apply(&mut m.v4, direct::Change::Add, &s.v4) {
        let _ = trie_delete(m.v6, &pick(&s.v6_keys, &new_v6));
        let _ = trie_delete(m.v4.trie, &pick(&s.v4_keys, &new_v4));
        let _ = direct::apply(&mut m.v4, direct::Change::Remove, &pick(&s.v4, &new_v4));
        return Err(e.context("nothing was added"));
    }
    let mut added = vec![false; nets.len()];
    for (at, new) in s
        .v4_at
        .iter()
        .zip(&new_v4)
        .chain(s.v6_at.iter().zip(&new_v6))
    {
        added[*at] = *new;
    }
    let mut report = Added::default();
    for (net, new) in nets.iter().zip(added) {
        if new {
            report.added.push(*net);
        } else {
            report.present.push(*net);
        }
    }
    Ok(report)
}

/// Removes every prefix from `list`, or none: each must be there exactly as given.
///
/// The tries change first, then the IPv4 direct tables.
pub fn remove_all(maps: &mut GuardMaps, list: List, nets: &[IpNet]) -> anyhow::Result<()> {
    let s = split(nets);
    let mut m = list_maps(maps, list);
    let failed = |net: &IpNet, e: io::Error| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            anyhow!("{net} is not on the {}: nothing was removed", list.name())
        } else {
            anyhow!(e).context(format!("removing {net}: nothing was removed"))
        }
    };
    if let Err((at, e)) = trie_delete(m.v4.trie, &s.v4_keys) {
        trie_restore(m.v4.trie, &s.v4_keys[..at]);
        return Err(failed(&nets[s.v4_at[at]], e));
    }
    if let Err((at, e)) = trie_delete(m.v6, &s.v6_keys) {
        trie_restore(m.v6, &s.v6_keys[..at]);
        trie_restore(m.v4.trie, &s.v4_keys);
        return Err(failed(&nets[s.v6_at[at]], e));
    }
    if let Err(e) = direct::apply(&mut m.v4, direct::Change::Remove, &s.v4) {
        trie_restore(m.v6, &s.v6_keys);
        trie_restore(m.v4.trie, &s.v4_keys);
        let _ = direct::apply(&mut m.v4, direct::Change::Add, &s.v4);
        return Err(e.context("nothing was removed"));
    }
    Ok(())
}

/// The prefixes of `nets` that are not on `list`.
pub fn missing(maps: &GuardMaps, list: List, nets: &[IpNet]) -> anyhow::Result<Vec<IpNet>> {
    let present: HashSet<IpNet> = entries(maps, list)?.into_iter().collect();
    Ok(nets
        .iter()
        .filter(|n| !present.contains(n))
        .copied()
        .collect())
}

/// Every prefix on `list`, IPv4 first, sorted.
pub fn entries(maps: &GuardMaps, list: List) -> anyhow::Result<Vec<IpNet>> {
    let (v4, v6) = tries_ref(maps, list);
    let mut out = BTreeSet::new();
    for (len, addr) in
        trie_entries(v4).with_context(|| format!("reading the IPv4 {}", list.name()))?
    {
        out.insert(net_of(addr.into(), len)?);
    }
    for (len, addr) in
        trie_entries(v6).with_context(|| format!("reading the IPv6 {}", list.name()))?
    {
        out.insert(net_of(addr.into(), len)?);
    }
    Ok(out.into_iter().collect())
}

/// Rebuilds `list`'s IPv4 direct tables from its trie, the set of record: every slot, chunk
/// and owner cleared, then every prefix written again. For a load over pinned maps, which
/// clears the tables (see `loader`): no program may be using them meanwhile.
pub fn rebuild_v4_tables(maps: &mut GuardMaps, list: List) -> anyhow::Result<()> {
    let nets: Vec<Ipv4Net> = entries(maps, list)?
        .into_iter()
        .filter_map(|net| match net {
            IpNet::V4(net) => Some(net),
            IpNet::V6(_) => None,
        })
        .collect();
    let mut m = list_maps(maps, list);
    direct::clear(&m.v4)?;
    direct::apply(&mut m.v4, direct::Change::Add, &nets)
        .with_context(|| format!("rebuilding the IPv4 {}'s tables", list.name()))
}

/// The number of IPv4 and IPv6 prefixes on `list`.
pub fn sizes(maps: &GuardMaps, list: List) -> (usize, usize) {
    let (v4, v6) = tries_ref(maps, list);
    (
        trie_entries(v4).map_or(0, |e| e.len()),
        trie_entries(v6).map_or(0, |e| e.len()),
    )
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
    fn refuses_zero_padded_octets_to_add_and_reads_them_as_decimal() {
        for (padded, read) in [
            ("010.0.0.0/8", "10.0.0.0/8"),
            ("010.0.0.1", "10.0.0.1/32"),
            ("10.009.0.3", "10.9.0.3/32"),
            ("1.2.3.04/32", "1.2.3.4/32"),
            ("1.0.0.0/08", "1.0.0.0/8"),
        ] {
            let e = parse_new_cidr(padded).unwrap_err().to_string();
            assert!(e.contains("leading zero"), "{padded}: {e}");
            // Config files and removal read them as they always did (host bits checked).
            match parse_cidr(padded) {
                Ok(net) => assert_eq!(net.to_string(), read),
                Err(e) => assert!(e.to_string().contains(read), "{padded}: {e}"),
            }
        }
        for good in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "fe80::/10",
            "2001:db8::10",
        ] {
            assert!(parse_new_cidr(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn refuses_ipv4_mapped_prefixes_to_add_but_removes_them() {
        let e = parse_new_cidr("::ffff:10.9.0.3").unwrap_err().to_string();
        assert!(e.contains("carry 10.9.0.3/32"), "{e}");
        let e = parse_new_cidr("::ffff:10.0.0.0/104")
            .unwrap_err()
            .to_string();
        assert!(e.contains("carry 10.0.0.0/8"), "{e}");
        assert!(parse_new_cidrs(&["10.0.0.0/8", "::ffff:1.2.3.4"]).is_err());
        // Prefixes that merely contain the mapped range are ordinary IPv6 prefixes.
        assert!(parse_new_cidr("::/0").is_ok());
        assert!(parse_new_cidr("::/80").is_ok());
        // Removal and config files take them, for entries added before the check.
        assert!(parse_cidrs(&["::ffff:10.9.0.3"]).is_ok());
        let net = parse_cidr("::ffff:10.9.0.3").unwrap();
        assert!(doubt("::ffff:10.9.0.3", net).is_some());
    }

    #[test]
    fn parse_cidrs_is_all_or_nothing_and_dedupes() {
        assert!(parse_cidrs(&["10.0.0.0/8", "bad"]).is_err());
        assert!(parse_cidrs::<&str>(&[]).is_err());
        let v = parse_cidrs(&["10.0.0.0/8", "10.0.0.0/8", "::/0"]).unwrap();
        assert_eq!(v.len(), 2);
    }
}
