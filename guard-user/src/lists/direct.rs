//! The IPv4 direct tables of one list (see guard-ebpf's `lists` module for the lookup):
//! keeping them equal to the list's prefixes, live, while packets are judged.
//!
//! # What the tables hold
//!
//! For every IPv4 address, the tables give the list's `Match`: the length of the longest
//! listed prefix that holds the address, plus one (0 for none). A /24's slot in its row is
//! that `Match` when all 256 addresses share it, else a chunk with one byte per address, else
//! (no chunk was free) "ask the trie". The trie is the list's set of record and always holds
//! every prefix, so a /24 sent to it is answered exactly.
//!
//! # How a change is computed
//!
//! Nothing is recomputed from the whole list. The trie is changed first; then each changed
//! prefix `Q` of length `l` rewrites only the addresses it covers, from the tables' current
//! `Match`es (`m`):
//!
//! - adding `Q`: `m' = max(m, l + 1)`;
//! - removing `Q`: `m' = cover(Q)` where `m == l + 1`, else `m' = m`. `cover(Q)` is the
//!   `Match` of the longest prefix shorter than `l` that holds `Q`, looked up in the trie once
//!   the batch is out of it (a lookup with a key of length `l - 1`). This is exact: an
//!   address with `m == l + 1` had `Q` as its longest match (the only prefix of length `l`
//!   that holds it), so nothing longer holds it, and everything shorter that holds it holds
//!   all of `Q`; and `cover(Q)` is never `l' + 1` for another removed `Q'`, so the prefixes
//!   of a batch can be applied in any order.
//!
//! Re-adding a prefix that is already listed is harmless (`max` is idempotent), and so is
//! re-removing one (no address has `m == l + 1` any more). That is how a change interrupted
//! between the trie and the tables (the process killed) is repaired, the tries being the
//! record: the daemon's next reconcile diffs its config against the tries and adds again what
//! the trie lacks (an interrupted removal, not yet persisted) or removes what the config lacks
//! (an interrupted addition); by hand, `guard allow` again completes an addition, and `guard
//! allow` then `guard revoke` a removal.
//!
//! The tables are `BPF_F_MMAPABLE` arrays (the rows and the chunks one value each, the
//! program's global data; the owners one `u64` per chunk), mapped into this process: the rows a change
//! touches are read from memory, their new contents computed (nothing is written until all
//! is computed, so a failure leaves the tables as they were), then stored slot by slot and
//! byte by byte, only where they change. No system call per prefix or per row: loading
//! 100,000 prefixes costs one batched trie insert and memory stores.
//!
//! # Why every packet sees the old or the new list
//!
//! The invariant: at every instant, the lookup of any address returns its `Match` under the
//! old list or under the new one (during a batch: under the old list plus, or minus, part of
//! the batch; a verdict is monotone in each list's `Match`, so that verdict is the old one or
//! the new one). Each address's `Match` lives in exactly one place, its slot or its chunk
//! byte, and each write changes it from old to new in one atomic store (a byte, or an aligned
//! `u16` slot). What must be ordered is where that place moves:
//!
//! 1. **A new chunk is written before the slot that points to it.** Every chunk byte is
//!    stored, then a release fence, then the slots; the program's read of a chunk depends on
//!    its read of the slot (an address dependency), so it cannot see the slot's new value and
//!    the chunk's old bytes.
//! 2. **A chunk that stays with its /24 is changed in place**, byte by byte from old to new:
//!    a lookup that read the slot before or after sees the old byte or the new one.
//! 3. **A chunk the /24 gives up (its slot becomes a `Match` or "ask the trie") is not
//!    touched again until no lookup can still be reading it**: it is marked free only after
//!    the rows are written and an RCU grace period has passed (`membarrier`, which is
//!    `synchronize_rcu`; every XDP run holds the RCU read lock), and only free chunks are
//!    handed out. A lookup that read the old slot reads the old chunk, intact.
//! 4. **The trie changes before the tables.** A /24 already sent to the trie follows the
//!    trie's per-prefix changes, each atomic; a /24 newly sent to it finds the new list there.
//!
//! So adding writes the deeper level first (chunks, then rows) and removing frees the deeper
//! level last (rows, then, after the grace period, chunks): the covering entry is never
//! changed before what it will point to is ready, nor is what it pointed to reused before
//! nothing can be looking.
//!
//! # Chunk ownership
//!
//! The owners map (user space's only) records, for each chunk, the /24 it belongs to, plus
//! one, or 0 when free: set before the chunk is published, cleared after the grace period.
//! A change interrupted between the two leaks chunks (never reuses a live one); when no chunk
//! is free, the owners are checked against the rows and the leaked ones reclaimed.

use std::{
    collections::BTreeMap,
    os::fd::AsFd as _,
    sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering, fence},
};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{Array, IterableMap as _, MapData};
use guard_common::maps::{V4_CHUNKS, V4_ROWS, slot};
use ipnet::Ipv4Net;

use super::{TrieV4, trie_lookup};
use crate::{
    maps::{V4ChunksMap, V4RowsMap},
    sys::{self, MappedArray},
};

/// One list's IPv4 maps.
pub(super) struct Tables<'a> {
    pub rows: &'a V4RowsMap,
    pub chunks: &'a V4ChunksMap,
    pub owners: &'a Array<MapData, u64>,
    pub trie: &'a mut TrieV4,
}

/// The three tables, mapped.
struct Mapped {
    rows: MappedArray,
    chunks: MappedArray,
    owners: MappedArray,
}

impl Mapped {
    fn new(t: &Tables<'_>) -> anyhow::Result<Self> {
        if t.owners.len() != V4_CHUNKS {
            bail!(
                "the IPv4 chunk owners map holds {} entries, not {V4_CHUNKS}",
                t.owners.len()
            );
        }
        let owners = MappedArray::new(t.owners.map().fd().as_fd(), V4_CHUNKS as usize * 8)
            .context("mapping the IPv4 chunk owners into memory")?;
        Ok(Self {
            rows: t.rows.mapped()?,
            chunks: t.chunks.mapped()?,
            owners,
        })
    }

    fn row(&self, row: u32) -> &[AtomicU16] {
        // SAFETY: any bit pattern is a valid u16; 65,536 rows of 256 slots.
        let all: &[AtomicU16] = unsafe { self.rows.as_slice() };
        &all[row as usize * 256..][..256]
    }

    fn chunk(&self, id: u32) -> &[AtomicU8] {
        // SAFETY: any bit pattern is a valid u8; 65,280 chunks of 256 bytes.
        let all: &[AtomicU8] = unsafe { self.chunks.as_slice() };
        &all[id as usize * 256..][..256]
    }

    fn owners(&self) -> &[AtomicU64] {
        // SAFETY: any bit pattern is a valid u64; one per chunk.
        unsafe { self.owners.as_slice() }
    }

    fn read_row(&self, row: u32) -> [u16; 256] {
        let mut out = [0u16; 256];
        for (o, s) in out.iter_mut().zip(self.row(row)) {
            *o = s.load(Ordering::Relaxed);
        }
        out
    }

    fn read_chunk(&self, id: u16) -> Box<[u8; 256]> {
        let mut out = Box::new([0u8; 256]);
        for (o, b) in out.iter_mut().zip(self.chunk(u32::from(id))) {
            *o = b.load(Ordering::Relaxed);
        }
        out
    }
}

/// Whether prefixes were added to the trie or removed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Add,
    Remove,
}

/// One prefix's rewrite of the `Match`es it covers.
#[derive(Clone, Copy, Debug)]
struct Op {
    addr: u32,
    len: u8,
    change: Change,
    /// For a removal: the `Match` the addresses it was the longest match of fall back to.
    cover: u8,
}

impl Op {
    fn apply(&self, m: u8) -> u8 {
        let own = self.len + 1;
        match self.change {
            Change::Add => m.max(own),
            Change::Remove if m == own => self.cover,
            Change::Remove => m,
        }
    }

    /// The rows the prefix covers.
    fn rows(&self) -> std::ops::Range<u32> {
        let first = self.addr >> 16;
        if self.len <= 16 {
            first..first + (1 << (16 - self.len))
        } else {
            first..first + 1
        }
    }

    /// The slots it covers in one of its rows, and for a prefix longer than /24 the bytes it
    /// covers in its slot's chunk.
    fn slots(&self) -> (std::ops::Range<usize>, Option<std::ops::Range<usize>>) {
        let third = ((self.addr >> 8) & 0xff) as usize;
        match self.len {
            0..=16 => (0..256, None),
            17..=24 => (third..third + (1 << (24 - self.len)), None),
            _ => {
                let fourth = (self.addr & 0xff) as usize;
                (
                    third..third + 1,
                    Some(fourth..fourth + (1 << (32 - self.len))),
                )
            }
        }
    }
}

/// A /24 whose addresses are handled one by one while a change is computed.
struct Bytes {
    /// The chunk it had, and that chunk's bytes.
    had: Option<(u16, Box<[u8; 256]>)>,
    bytes: Box<[u8; 256]>,
}

impl Bytes {
    fn uniform(&self) -> Option<u8> {
        let first = self.bytes[0];
        self.bytes.iter().all(|b| *b == first).then_some(first)
    }
}

/// The stores a change makes, computed before any is made.
#[derive(Default)]
struct Plan {
    /// Rows that change: index, new row.
    rows: Vec<(u32, Box<[u16; 256]>)>,
    /// Chunks to store: id, bytes, and whether the chunk is new (published by this change).
    chunks: Vec<(u32, Box<[u8; 256]>, bool)>,
    /// Chunks newly owned: id, owner (the /24's index plus one).
    owned: Vec<(u32, u64)>,
    /// Chunks given up.
    freed: Vec<u32>,
}

struct Context<'t, 'a> {
    tables: &'t Tables<'a>,
    mapped: &'t Mapped,
    /// Free chunks, lowest id last; read from the owners on first need.
    free: Option<Vec<u32>>,
    /// The owners were checked for leaked chunks in this change already.
    reclaimed: bool,
    /// Leaked chunks reclaimed but not handed out: their owners are cleared at the end.
    reclaimed_unused: Vec<u32>,
    plan: Plan,
}

/// Clears the tables: every slot 0 (no prefix), every chunk zero and free. Only while no
/// program uses them: a source's answer is wrong until they are filled again.
pub(super) fn clear(tables: &Tables<'_>) -> anyhow::Result<()> {
    let mapped = Mapped::new(tables)?;
    for memory in [&mapped.rows, &mapped.chunks, &mapped.owners] {
        // SAFETY: the mapping is writable and `len` bytes long.
        unsafe { std::ptr::write_bytes(memory.as_ptr(), 0, memory.len()) };
    }
    Ok(())
}

/// Applies a change to the tables: the trie must already hold the new list. `nets` are the
/// prefixes added (or re-added) or removed.
pub(super) fn apply(
    tables: &mut Tables<'_>,
    change: Change,
    nets: &[Ipv4Net],
) -> anyhow::Result<()> {
    if nets.is_empty() {
        return Ok(());
    }
    let mut ops = Vec::with_capacity(nets.len());
    for net in nets {
        let len = net.prefix_len();
        let cover = match change {
            Change::Remove if len > 0 => {
                trie_lookup(tables.trie, net.network().octets(), u32::from(len) - 1)?
            }
            _ => 0,
        };
        ops.push(Op {
            addr: u32::from(net.network()),
            len,
            change,
            cover: cover as u8,
        });
    }
    // The ops of each row.
    let mut per_row: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        for row in op.rows() {
            per_row.entry(row).or_default().push(i);
        }
    }
    let mapped = Mapped::new(tables)?;
    let mut cx = Context {
        tables,
        mapped: &mapped,
        free: None,
        reclaimed: false,
        reclaimed_unused: Vec::new(),
        plan: Plan::default(),
    };
    let mut row_ops = Vec::new();
    for (row, indices) in &per_row {
        row_ops.clear();
        row_ops.extend(indices.iter().map(|i| &ops[*i]));
        cx.row(*row, &row_ops)?;
    }
    let Context {
        plan,
        reclaimed_unused,
        ..
    } = cx;
    store(&mapped, plan, reclaimed_unused);
    Ok(())
}

impl Context<'_, '_> {
    /// Computes one row's new contents (and the chunks it needs) into the plan.
    fn row(&mut self, row: u32, ops: &[&Op]) -> anyhow::Result<()> {
        const PLAIN: u8 = 0;
        const BYTES: u8 = 1;
        const TRIE: u8 = 2;
        let old = self.mapped.read_row(row);
        let mut new = old;
        // How each slot is handled: its value in `new`, bytes (in `bytes`), or left to the
        // trie. The prefixes of a change commute (see the module's documentation), so those
        // covering the whole row go first, as one table over the `Match` values.
        let mut kind = [PLAIN; 256];
        let mut bytes: Vec<(usize, Bytes)> = Vec::new();
        let mut at = [0u16; 256];
        let mut table: [u8; slot::MAX_MATCH as usize + 1] = std::array::from_fn(|m| m as u8);
        let mut wide = false;
        for op in ops.iter().filter(|op| op.len <= 16) {
            wide = true;
            for m in &mut table {
                *m = op.apply(*m);
            }
        }
        for s in 0..256 {
            let v = old[s];
            if v <= slot::MAX_MATCH {
                if wide {
                    new[s] = u16::from(table[usize::from(v)]);
                }
                continue;
            }
            let touched = wide
                || ops
                    .iter()
                    .any(|op| op.len > 16 && op.slots().0.contains(&s));
            if !touched {
                continue;
            }
            let b = if v >= slot::CHUNK_BASE {
                let id = v - slot::CHUNK_BASE;
                let had = self.mapped.read_chunk(id);
                Bytes {
                    bytes: had.clone(),
                    had: Some((id, had)),
                }
            } else {
                match self.read_back_from_trie(row, s)? {
                    // Read from the trie, which already holds the new list: the ops have
                    // nothing left to change, and applying them is harmless.
                    Some(b) => b,
                    None => {
                        kind[s] = TRIE;
                        continue;
                    }
                }
            };
            kind[s] = BYTES;
            at[s] = bytes.len() as u16;
            bytes.push((s, b));
            if wide {
                let b = &mut bytes.last_mut().expect("just pushed").1.bytes;
                for m in b.iter_mut() {
                    *m = table[usize::from(*m).min(slot::MAX_MATCH as usize)];
                }
            }
        }
        for op in ops.iter().filter(|op| op.len > 16) {
            let (slots, sub) = op.slots();
            for s in slots {
                match kind[s] {
                    TRIE => {}
                    BYTES => apply_bytes(&mut bytes[usize::from(at[s])].1.bytes, op, sub.clone()),
                    _ => match &sub {
                        None => new[s] = u16::from(op.apply(new[s] as u8)),
                        Some(sub) => {
                            let mut b = Bytes {
                                had: None,
                                bytes: Box::new([new[s] as u8; 256]),
                            };
                            apply_bytes(&mut b.bytes, op, Some(sub.clone()));
                            kind[s] = BYTES;
                            at[s] = bytes.len() as u16;
                            bytes.push((s, b));
                        }
                    },
                }
            }
        }
        for (s, b) in bytes {
            let owner = u64::from((row << 8) | s as u32) + 1;
            new[s] = match (b.uniform(), b.had) {
                (Some(m), had) => {
                    if let Some((id, _)) = had {
                        self.plan.freed.push(u32::from(id));
                    }
                    u16::from(m)
                }
                (None, Some((id, had))) => {
                    if *had != *b.bytes {
                        self.plan.chunks.push((u32::from(id), b.bytes, false));
                    }
                    slot::CHUNK_BASE + id
                }
                (None, None) => match self.allocate(owner)? {
                    Some(id) => {
                        self.plan.chunks.push((id, b.bytes, true));
                        slot::CHUNK_BASE + id as u16
                    }
                    None => slot::TRIE,
                },
            };
        }
        if new != old {
            self.plan.rows.push((row, Box::new(new)));
        }
        Ok(())
    }

    /// The bytes of a /24 that was left to the trie, read back from the trie (256 lookups),
    /// when a chunk may be free to hold them; `None` leaves it with the trie.
    fn read_back_from_trie(&mut self, row: u32, s: usize) -> anyhow::Result<Option<Bytes>> {
        if self.free().is_empty() && !self.reclaim() {
            return Ok(None);
        }
        let base = (row << 16) | ((s as u32) << 8);
        let mut bytes = Box::new([0u8; 256]);
        for (i, b) in bytes.iter_mut().enumerate() {
            let addr = (base | i as u32).to_be_bytes();
            *b = trie_lookup(self.tables.trie, addr, 32)? as u8;
        }
        Ok(Some(Bytes { had: None, bytes }))
    }

    fn free(&mut self) -> &mut Vec<u32> {
        let owners = self.mapped.owners();
        self.free.get_or_insert_with(|| {
            (0..V4_CHUNKS)
                .rev()
                .filter(|id| owners[*id as usize].load(Ordering::Relaxed) == 0)
                .collect()
        })
    }

    /// A free chunk for `owner`, or `None` when every chunk is in use.
    fn allocate(&mut self, owner: u64) -> anyhow::Result<Option<u32>> {
        if self.free().is_empty() && !self.reclaim() {
            return Ok(None);
        }
        let id = self.free().pop().ok_or_else(|| anyhow!("no free chunk"))?;
        self.reclaimed_unused.retain(|c| *c != id);
        self.plan.owned.push((id, owner));
        Ok(Some(id))
    }

    /// Looks for chunks an interrupted change leaked (owned, but pointed to by no slot), once
    /// per change. True when some were found.
    fn reclaim(&mut self) -> bool {
        if self.reclaimed {
            return false;
        }
        self.reclaimed = true;
        let mut referenced = vec![false; V4_CHUNKS as usize];
        for row in 0..V4_ROWS {
            for s in self.mapped.row(row) {
                let v = s.load(Ordering::Relaxed);
                if v >= slot::CHUNK_BASE {
                    referenced[usize::from(v - slot::CHUNK_BASE)] = true;
                }
            }
        }
        // Chunks this change handed out are owned only in the plan so far.
        for (id, _) in &self.plan.owned {
            referenced[*id as usize] = true;
        }
        let owners = self.mapped.owners();
        let leaked: Vec<u32> = (0..V4_CHUNKS)
            .filter(|id| {
                owners[*id as usize].load(Ordering::Relaxed) != 0 && !referenced[*id as usize]
            })
            .collect();
        if leaked.is_empty() {
            return false;
        }
        log::warn!(
            "reclaiming {} IPv4 chunks left owned by an interrupted change",
            leaked.len()
        );
        // They may have been given up a moment ago: let any lookup still reading them finish.
        sys::rcu_grace_period();
        self.reclaimed_unused.extend(&leaked);
        self.free().extend(leaked.iter().rev());
        true
    }
}

fn apply_bytes(bytes: &mut [u8; 256], op: &Op, sub: Option<std::ops::Range<usize>>) {
    for b in &mut bytes[sub.unwrap_or(0..256)] {
        *b = op.apply(*b);
    }
}

/// Makes a plan's stores in the order that keeps every lookup on the old or the new list
/// (see the module's documentation).
fn store(mapped: &Mapped, plan: Plan, reclaimed_unused: Vec<u32>) {
    let owners = mapped.owners();
    // Owners first: a change interrupted from here on leaks chunks, never shares one.
    for (id, owner) in &plan.owned {
        owners[*id as usize].store(*owner, Ordering::Relaxed);
    }
    // Then the chunks, new and changed: only the bytes that change.
    for (id, bytes, _) in &plan.chunks {
        for (b, new) in mapped.chunk(*id).iter().zip(bytes.iter()) {
            if b.load(Ordering::Relaxed) != *new {
                b.store(*new, Ordering::Relaxed);
            }
        }
    }
    // Every chunk byte before any slot that points to a new chunk.
    fence(Ordering::Release);
    for (row, new) in &plan.rows {
        for (s, new) in mapped.row(*row).iter().zip(new.iter()) {
            if s.load(Ordering::Relaxed) != *new {
                s.store(*new, Ordering::Release);
            }
        }
    }
    // Last, once no lookup can still be reading them, the chunks given up become free.
    if !plan.freed.is_empty() {
        sys::rcu_grace_period();
    }
    for id in plan.freed.iter().chain(&reclaimed_unused) {
        owners[*id as usize].store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(net: &str, change: Change, cover: u8) -> Op {
        let net: Ipv4Net = net.parse().unwrap();
        Op {
            addr: u32::from(net.network()),
            len: net.prefix_len(),
            change,
            cover,
        }
    }

    #[test]
    fn a_prefix_covers_its_rows_slots_and_bytes() {
        let all = op("0.0.0.0/0", Change::Add, 0);
        assert_eq!(all.rows(), 0..65_536);
        assert_eq!(all.slots(), (0..256, None));
        let eight = op("10.0.0.0/8", Change::Add, 0);
        assert_eq!(eight.rows(), 0x0a00..0x0b00);
        let seventeen = op("10.1.128.0/17", Change::Add, 0);
        assert_eq!(seventeen.rows(), 0x0a01..0x0a02);
        assert_eq!(seventeen.slots(), (128..256, None));
        let twenty_four = op("10.1.2.0/24", Change::Add, 0);
        assert_eq!(twenty_four.slots(), (2..3, None));
        let twenty_five = op("10.1.2.128/25", Change::Add, 0);
        assert_eq!(twenty_five.slots(), (2..3, Some(128..256)));
        let host = op("255.255.255.255/32", Change::Add, 0);
        assert_eq!(host.rows(), 0xffff..0x1_0000);
        assert_eq!(host.slots(), (255..256, Some(255..256)));
    }

    #[test]
    fn adding_keeps_the_longest_and_removing_falls_back_to_the_cover() {
        let add = op("10.1.0.0/16", Change::Add, 0);
        assert_eq!(add.apply(0), 17);
        assert_eq!(add.apply(9), 17);
        assert_eq!(add.apply(25), 25);
        // Removing the /16, whose cover is a /8 (Match 9): only its own addresses change.
        let remove = op("10.1.0.0/16", Change::Remove, 9);
        assert_eq!(remove.apply(17), 9);
        assert_eq!(remove.apply(25), 25);
        assert_eq!(remove.apply(9), 9);
        assert_eq!(op("0.0.0.0/0", Change::Remove, 0).apply(1), 0);
    }
}
