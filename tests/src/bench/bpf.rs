//! Raw bpf(2) calls for what aya does not wrap here: tiny hand-assembled XDP programs (the
//! floor, the ceiling, the traffic generators), BPF_PROG_TEST_RUN on any program fd (the
//! floor, xdp-filter's program), XDP links by fd, and program fds by id.
//!
//! The attribute layouts are those of `union bpf_attr` in the kernel's UAPI header.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;

/// A zeroed `union bpf_attr` (larger than any command needs; the kernel wants the tail zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }

    fn call(&mut self, cmd: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: a bpf(2) call with a valid, writable attribute buffer of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn call_fd(&mut self, cmd: libc::c_long) -> io::Result<OwnedFd> {
        let fd = self.call(cmd)?;
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }
}

/// A tiny eBPF assembler: just the instructions the bench's programs use.
pub mod asm {
    /// One 8-byte instruction.
    pub type Insn = [u8; 8];

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let mut i = [0u8; 8];
        i[0] = code;
        i[1] = (src << 4) | (dst & 0x0f);
        i[2..4].copy_from_slice(&off.to_le_bytes());
        i[4..8].copy_from_slice(&imm.to_le_bytes());
        i
    }

    /// `dst = imm` (64-bit).
    pub fn mov_imm(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm)
    }
    /// `dst = src` (64-bit).
    pub fn mov(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0)
    }
    /// `wdst = wsrc` (32-bit, zero-extends).
    pub fn mov32(dst: u8, src: u8) -> Insn {
        insn(0xbc, dst, src, 0, 0)
    }
    /// `dst += imm` (64-bit).
    pub fn add_imm(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm)
    }
    /// `dst += src` (64-bit).
    pub fn add(dst: u8, src: u8) -> Insn {
        insn(0x0f, dst, src, 0, 0)
    }
    /// `dst &= imm` (64-bit).
    pub fn and_imm(dst: u8, imm: i32) -> Insn {
        insn(0x57, dst, 0, 0, imm)
    }
    /// `wdst &= imm` (32-bit).
    pub fn and32_imm(dst: u8, imm: i32) -> Insn {
        insn(0x54, dst, 0, 0, imm)
    }
    /// `wdst |= imm` (32-bit).
    pub fn or32_imm(dst: u8, imm: i32) -> Insn {
        insn(0x44, dst, 0, 0, imm)
    }
    /// `dst ^= imm` (64-bit).
    pub fn xor_imm(dst: u8, imm: i32) -> Insn {
        insn(0xa7, dst, 0, 0, imm)
    }
    /// `dst <<= imm` (64-bit).
    pub fn lsh_imm(dst: u8, imm: i32) -> Insn {
        insn(0x67, dst, 0, 0, imm)
    }
    /// `dst >>= imm` (64-bit, logical).
    pub fn rsh_imm(dst: u8, imm: i32) -> Insn {
        insn(0x77, dst, 0, 0, imm)
    }
    /// `dst = *(u32 *)(src + off)`.
    pub fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x61, dst, src, off, 0)
    }
    /// `dst = *(u16 *)(src + off)`.
    pub fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x69, dst, src, off, 0)
    }
    /// `dst = *(u8 *)(src + off)`.
    pub fn ldx_b(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x71, dst, src, off, 0)
    }
    /// `dst = *(u64 *)(src + off)`.
    pub fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x79, dst, src, off, 0)
    }
    /// `*(u64 *)(dst + off) = src`.
    pub fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x7b, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = src`.
    pub fn stx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x63, dst, src, off, 0)
    }
    /// `*(u16 *)(dst + off) = src`.
    pub fn stx_h(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x6b, dst, src, off, 0)
    }
    /// `if dst > src goto +off` (unsigned).
    pub fn jgt(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x2d, dst, src, off, 0)
    }
    /// `if dst != imm goto +off`.
    pub fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x55, dst, 0, off, imm)
    }
    /// `if dst == imm goto +off`.
    pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x15, dst, 0, off, imm)
    }
    /// `if dst > imm goto +off` (unsigned).
    pub fn jgt_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x25, dst, 0, off, imm)
    }
    /// `goto +off`.
    pub fn ja(off: i16) -> Insn {
        insn(0x05, 0, 0, off, 0)
    }
    /// `dst = map` (a map by fd): two instruction slots.
    pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        // BPF_LD | BPF_DW | BPF_IMM with src = BPF_PSEUDO_MAP_FD.
        [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)]
    }
    /// `dst = &value` of a one-entry array map (by fd), plus `off`: two instruction slots.
    pub fn ld_map_value(dst: u8, fd: i32, off: i32) -> [Insn; 2] {
        // BPF_LD | BPF_DW | BPF_IMM with src = BPF_PSEUDO_MAP_VALUE.
        [insn(0x18, dst, 2, 0, fd), insn(0, 0, 0, 0, off)]
    }
    /// `call helper`.
    pub fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper)
    }
    /// `exit`.
    pub fn exit() -> Insn {
        insn(0x95, 0, 0, 0, 0)
    }
}

/// `bpf_get_prandom_u32`.
const HELPER_GET_PRANDOM_U32: i32 = 7;
/// `bpf_map_lookup_elem`.
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;

/// `r0 = action; exit`: XDP_DROP for the floor and the ceiling, XDP_TX for the generator.
pub fn return_only(action: u32) -> Vec<asm::Insn> {
    vec![asm::mov_imm(0, action as i32), asm::exit()]
}

/// The floor plus `n` ALU instructions in eight independent chains of register adds (r2 to
/// r9): a calibration of what a simple instruction costs in the test-run harness.
pub fn alu_ladder(n: usize, action: u32) -> Vec<asm::Insn> {
    let mut p: Vec<asm::Insn> = (2..10).map(|r| asm::mov_imm(r, 0)).collect();
    p.extend((0..n).map(|i| asm::add_imm(2 + (i % 8) as u8, 1)));
    p.extend(return_only(action));
    p
}

/// The spoofing generator: writes a random source address inside `base/10` into an untagged
/// IPv4 frame, fixes the IPv4 header checksum incrementally (RFC 1624, so it is right whether
/// or not the kernel resets the frame between runs), and returns XDP_TX.
pub fn spoofing_tx(base: [u8; 4]) -> Vec<asm::Insn> {
    use asm::*;
    // The source address as the program stores it: a native (little-endian) u32 whose low byte
    // goes on the wire first. Keep the top 10 bits of `base`, randomise the other 22.
    let keep_mask = u32::from_le_bytes([0xff, 0xc0, 0, 0]);
    let fixed = u32::from_le_bytes([base[0], base[1] & 0xc0, 0, 0]);
    const SADDR: i16 = 14 + 12;
    const CSUM: i16 = 14 + 10;
    let body = vec![
        call(HELPER_GET_PRANDOM_U32),
        mov32(0, 0), // zero-extend the helper's u32
        and32_imm(0, !keep_mask as i32),
        or32_imm(0, fixed as i32),
        ldx_w(3, 6, SADDR), // r3 = old source
        stx_w(6, 0, SADDR), // source = r0
        ldx_h(4, 6, CSUM),  // r4 = old checksum HC
        xor_imm(4, 0xffff), // ~HC
        mov(5, 3),
        and_imm(5, 0xffff),
        xor_imm(5, 0xffff), // + ~m (low half)
        add(4, 5),
        rsh_imm(3, 16),
        xor_imm(3, 0xffff), // + ~m (high half)
        add(4, 3),
        mov(5, 0),
        and_imm(5, 0xffff), // + m' (low half)
        add(4, 5),
        rsh_imm(0, 16), // + m' (high half)
        add(4, 0),
        mov(5, 4),
        rsh_imm(5, 16),
        and_imm(4, 0xffff),
        add(4, 5), // fold once
        mov(5, 4),
        rsh_imm(5, 16),
        and_imm(4, 0xffff),
        add(4, 5),          // fold twice
        xor_imm(4, 0xffff), // HC' = ~(~HC + ~m + m')
        stx_h(6, 4, CSUM),
    ];
    let mut prog = vec![
        ldx_w(6, 1, 0), // r6 = ctx->data
        ldx_w(7, 1, 4), // r7 = ctx->data_end
        mov(2, 6),
        add_imm(2, 34),               // r2 = data + Ethernet + IPv4 header
        jgt(2, 7, body.len() as i16), // too short: skip to XDP_TX
    ];
    prog.extend(body);
    prog.extend(return_only(XDP_TX));
    prog
}

/// The maps the reference program reads and writes, by fd.
#[derive(Clone, Copy, Debug)]
pub struct ReferenceMaps {
    /// guard's IPv4 allowlist rows (`GUARD_A4_L24`, one value: the whole table).
    pub rows: i32,
    /// guard's IPv4 allowlist chunks (`GUARD_A4_L32`, one value: every chunk).
    pub chunks: i32,
    /// A per-CPU array of `u64`, at least 3 entries: the reference's counters.
    pub counters: i32,
}

/// The least work the per-packet targets ask of any guard, hand-assembled: parse an untagged
/// Ethernet + IPv4 (IHL 5, not a fragment) + UDP frame, test the destination port against
/// 11211, look the source up in guard's own direct tables, addressed directly as guard does
/// (its row, then the /24's chunk when the row points to one), count the verdict in a per-CPU array (packets only, no interface),
/// and drop or pass. Every other frame, and a /24 that guard marked for its trie, passes
/// unjudged. No denylist, policy, dry-run, byte counts, interfaces or top talkers: this is a
/// lower bound for guard's own dropped and allowlisted paths, not a guard.
pub fn reference(maps: ReferenceMaps) -> Vec<asm::Insn> {
    use asm::*;
    /// An instruction, a jump to a label, or a label.
    enum Op {
        I(Insn),
        J(Insn, &'static str),
        L(&'static str),
    }
    use Op::{I, J, L};
    let map = |dst: u8, fd: i32| ld_map_fd(dst, fd).map(I);
    let value = |dst: u8, fd: i32| ld_map_value(dst, fd, 0).map(I);
    let port = i32::from(u16::from_le_bytes(11211u16.to_be_bytes()));
    let mut ops = vec![
        I(ldx_w(6, 1, 0)), // r6 = data
        I(ldx_w(7, 1, 4)), // r7 = data_end
        I(mov(2, 6)),
        I(add_imm(2, 42)), // Ethernet 14 + IPv4 20 + UDP 8
        J(jgt(2, 7, 0), "pass"),
        I(ldx_w(2, 6, 12)), // EtherType and version/IHL
        I(and_imm(2, 0x00ff_ffff)),
        J(jne_imm(2, 0x0045_0008, 0), "pass"),
        I(ldx_w(2, 6, 20)), // flags/fragment offset, TTL, protocol
        I(and_imm(2, 0xff00_ff3f_u32 as i32)),
        J(jne_imm(2, 0x1100_0000, 0), "pass"),
        I(ldx_h(2, 6, 36)), // destination port, wire order
        J(jne_imm(2, port, 0), "pass"),
        I(ldx_b(2, 6, 26)), // the source's first two bytes: the row, 512 bytes a row
        I(lsh_imm(2, 17)),
        I(ldx_b(3, 6, 27)),
        I(lsh_imm(3, 9)),
        I(add(2, 3)),
    ];
    ops.extend(value(0, maps.rows));
    ops.extend([
        I(add(0, 2)),
        I(ldx_b(2, 6, 28)), // third byte: the slot
        I(lsh_imm(2, 1)),
        I(add(0, 2)),
        I(ldx_h(8, 0, 0)),
        J(jgt_imm(8, 255, 0), "chunk"),
        J(jgt_imm(8, 33, 0), "pass"), // marked for the trie: not modelled
        J(ja(0), "decide"),
        L("chunk"),
        I(lsh_imm(8, 8)), // 256 bytes a chunk, from slot 256 on
    ]);
    ops.extend(value(0, maps.chunks));
    ops.extend([
        I(add(0, 8)),
        I(add_imm(0, -256 * 256)),
        I(ldx_b(2, 6, 29)), // last byte: the address's match
        I(add(0, 2)),
        I(ldx_b(8, 0, 0)),
        L("decide"),
        I(mov_imm(9, XDP_PASS as i32)),
        I(mov_imm(2, 1)), // counter 1: allowlisted
        J(jne_imm(8, 0, 0), "count"),
        I(mov_imm(9, XDP_DROP as i32)),
        I(mov_imm(2, 2)), // counter 2: dropped
        L("count"),
        I(stx_w(10, 2, -4)),
        I(mov(2, 10)),
        I(add_imm(2, -4)),
    ]);
    ops.extend(map(1, maps.counters));
    ops.extend([
        I(call(HELPER_MAP_LOOKUP_ELEM)),
        J(jeq_imm(0, 0, 0), "return"),
        I(ldx_dw(1, 0, 0)),
        I(add_imm(1, 1)),
        I(stx_dw(0, 1, 0)),
        L("return"),
        I(mov(0, 9)),
        I(exit()),
        L("pass"),
        I(mov_imm(0, XDP_PASS as i32)),
        I(exit()),
    ]);
    // Resolve labels: a jump's offset counts instructions after the jump.
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for op in &ops {
        match op {
            L(name) => {
                at.insert(*name, n);
            }
            I(_) | J(..) => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for op in ops {
        match op {
            I(i) => out.push(i),
            J(mut i, label) => {
                let off = at[label] as i64 - out.len() as i64 - 1;
                i[2..4].copy_from_slice(&(off as i16).to_le_bytes());
                out.push(i);
            }
            L(_) => {}
        }
    }
    out
}

/// A per-CPU array of `entries` `u64` values.
pub fn create_percpu_array(entries: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_PERCPU_ARRAY)
        .u32(4, 4)
        .u32(8, 8)
        .u32(12, entries);
    a.call_fd(BPF_MAP_CREATE)
}

/// Loads an XDP program; the verifier's log is in the error when it refuses.
pub fn load_xdp(name: &str, insns: &[asm::Insn]) -> io::Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flatten().copied().collect();
    let license: &CStr = c"GPL";
    let try_load = |log: Option<&mut Vec<u8>>| {
        let mut a = Attr::new();
        a.u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, insns.len() as u32)
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(68, BPF_XDP);
        let bytes = name.as_bytes();
        let n = bytes.len().min(15);
        a.0[48..48 + n].copy_from_slice(&bytes[..n]);
        if let Some(log) = log {
            a.u32(24, 1)
                .u32(28, log.len() as u32)
                .u64(32, log.as_mut_ptr() as u64);
            a.call_fd(BPF_PROG_LOAD)
        } else {
            a.call_fd(BPF_PROG_LOAD)
        }
    };
    match try_load(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 1 << 16];
            let _ = try_load(Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(io::Error::new(
                first.kind(),
                format!(
                    "loading XDP program {name}: {first}; verifier: {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                ),
            ))
        }
    }
}

/// Turns the kernel's run-time statistics of BPF programs on (BPF_ENABLE_STATS,
/// BPF_STATS_RUN_TIME) for as long as the returned fd is open: every run of every program is
/// then timed alone, with a clock read on each side.
pub fn enable_run_stats() -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, 0);
    a.call_fd(BPF_ENABLE_STATS)
}

/// A program's run-time statistics (`bpf_prog_info`'s `run_time_ns` and `run_cnt`): the
/// nanoseconds spent in its runs and their number, since it was loaded.
pub fn run_stats(prog: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // Large enough for every field up to run_cnt (offset 200) on any kernel that has them.
    let mut info = [0u8; 256];
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    a.call(BPF_OBJ_GET_INFO_BY_FD)?;
    let at = |off: usize| u64::from_ne_bytes(info[off..off + 8].try_into().expect("8 bytes"));
    Ok((at(192), at(200)))
}

/// `repeat` runs of `prog` on `data` timed by the kernel's run-time statistics (which must be
/// on): the mean nanoseconds per run, to a fraction of a nanosecond.
pub fn timed_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> io::Result<f64> {
    let (ns0, runs0) = run_stats(prog)?;
    test_run(prog, data, repeat)?;
    let (ns1, runs1) = run_stats(prog)?;
    if runs1 - runs0 != u64::from(repeat) {
        return Err(io::Error::other(format!(
            "the kernel counted {} runs of {repeat}: are its run-time statistics on?",
            runs1 - runs0
        )));
    }
    Ok((ns1 - ns0) as f64 / f64::from(repeat))
}

/// What one BPF_PROG_TEST_RUN reported.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// The kernel's mean time per run, nanoseconds (truncated to an integer by the kernel).
    pub duration_ns: u32,
}

/// BPF_PROG_TEST_RUN of `prog` on `data`, `repeat` times.
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> io::Result<TestRun> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, data.len() as u32)
        .u64(16, data.as_ptr() as u64)
        .u32(32, repeat);
    a.call(BPF_PROG_TEST_RUN)?;
    Ok(TestRun {
        retval: a.get_u32(4),
        duration_ns: a.get_u32(36),
    })
}

/// One BPF_PROG_TEST_RUN of `prog` on `data`; the frame as the program left it is written to
/// `out`. Returns the action and the output's length.
pub fn test_run_output(
    prog: BorrowedFd<'_>,
    data: &[u8],
    out: &mut [u8],
) -> io::Result<(u32, usize)> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, data.len() as u32)
        .u32(12, out.len() as u32)
        .u64(16, data.as_ptr() as u64)
        .u64(24, out.as_mut_ptr() as u64)
        .u32(32, 1);
    a.call(BPF_PROG_TEST_RUN)?;
    Ok((a.get_u32(4), a.get_u32(12) as usize))
}

/// BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: `repeat` copies of `data` go through
/// `prog` as if received on `ifindex` (of the calling thread's network namespace), in batches
/// of `batch`; XDP_TX sends them out of that interface. Returns the kernel's mean ns per
/// frame inside its run loop (setup and teardown of the call excluded).
pub fn test_run_live(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ifindex: u32,
    repeat: u32,
    batch: u32,
) -> io::Result<u32> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, data.len() as u32)
        .u64(16, data.as_ptr() as u64)
        .u32(32, repeat)
        .u32(40, ctx.len() as u32)
        .u64(48, ctx.as_ptr() as u64)
        .u32(64, BPF_F_TEST_XDP_LIVE_FRAMES)
        .u32(72, batch);
    a.call(BPF_PROG_TEST_RUN)?;
    Ok(a.get_u32(36))
}

/// An XDP program attached to an interface by a bpf_link: detached when dropped.
#[derive(Debug)]
pub struct XdpLink {
    _fd: OwnedFd,
}

/// Attaches `prog` to `ifindex` of the calling thread's network namespace with `flags`
/// (e.g. [`XDP_FLAGS_DRV_MODE`]).
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<XdpLink> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, flags);
    Ok(XdpLink {
        _fd: a.call_fd(BPF_LINK_CREATE)?,
    })
}

/// A new fd for the program with this id.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, id);
    a.call_fd(BPF_PROG_GET_FD_BY_ID)
}
