//! The few bpf(2) calls aya 0.14 does not expose: the interface of an XDP link, batched map
//! operations, a memory-mappable one-entry array; and an RCU grace period.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// `BPF_LINK_TYPE_XDP`.
pub const BPF_LINK_TYPE_XDP: u32 = 6;

/// What the kernel says about a pinned link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkDetails {
    /// `bpf_link_type`.
    pub link_type: u32,
    /// Link id.
    pub id: u32,
    /// Id of the program behind the link.
    pub prog_id: u32,
    /// For an XDP link, the interface it is attached to; 0 once the interface is gone.
    pub ifindex: u32,
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: attr is a valid buffer of the given size for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A path as a C string.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with `RENAME_NOREPLACE`; bpffs
/// supports it).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are valid NUL-terminated paths for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens a pinned BPF object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut attr = [0u8; 16];
    attr[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the BPF object `fd` at `path`.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    let mut attr = [0u8; 16];
    attr[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    bpf(BPF_OBJ_PIN, &mut attr)?;
    Ok(())
}

/// Creates a one-entry array map whose value is `value_size` bytes of zeroes, memory-mappable
/// (`BPF_F_MMAPABLE`), named `name` (at most 15 bytes are kept).
pub fn create_mmapable_value(name: &str, value_size: u32) -> io::Result<OwnedFd> {
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    const BPF_F_MMAPABLE: u32 = 1 << 10;
    // union bpf_attr, map_create: type, key_size, value_size, max_entries, map_flags,
    // inner_map_fd, numa_node, then map_name[16] at offset 28.
    let mut attr = [0u8; 72];
    for (at, v) in [BPF_MAP_TYPE_ARRAY, 4, value_size, 1, BPF_F_MMAPABLE]
        .into_iter()
        .enumerate()
    {
        attr[at * 4..at * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let name: Vec<u8> = name
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        .take(15)
        .collect();
    attr[28..28 + name.len()].copy_from_slice(&name);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reads the details of the link pinned at `path`.
pub fn link_details(path: &Path) -> io::Result<LinkDetails> {
    let fd = obj_get(path)?;
    let mut info = [0u8; 256];
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let word = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    Ok(LinkDetails {
        link_type: word(0),
        id: word(4),
        prog_id: word(8),
        // struct bpf_link_info: the union after type, id, prog_id is 8-byte aligned.
        ifindex: word(16),
    })
}

/// The index of interface `name`, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of interface `index`, if it exists.
pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// A batch call's attributes (`bpf_attr.batch`).
fn batch_attr(
    fd: BorrowedFd<'_>,
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    elem_flags: u64,
) -> [u8; 56] {
    let mut attr = [0u8; 56];
    attr[0..8].copy_from_slice(&in_batch.to_ne_bytes());
    attr[8..16].copy_from_slice(&out_batch.to_ne_bytes());
    attr[16..24].copy_from_slice(&keys.to_ne_bytes());
    attr[24..32].copy_from_slice(&values.to_ne_bytes());
    attr[32..36].copy_from_slice(&count.to_ne_bytes());
    attr[36..40].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[40..48].copy_from_slice(&elem_flags.to_ne_bytes());
    attr
}

fn batch_count(attr: &[u8; 56]) -> usize {
    u32::from_ne_bytes(attr[32..36].try_into().expect("4 bytes")) as usize
}

/// A batched map change that stopped early: how many elements were done, and why it stopped.
#[derive(Debug)]
pub struct BatchError {
    /// Elements applied, in order, before the failure.
    pub done: usize,
    /// What the kernel said about the next one.
    pub error: io::Error,
}

/// `BPF_MAP_UPDATE_BATCH`: writes `count` keys and values (packed, in this order) with
/// `elem_flags` (`BPF_ANY`, `BPF_NOEXIST`, ...). The kernel applies them one after the other,
/// in order, and stops at the first failure.
pub fn map_update_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
    elem_flags: u64,
) -> Result<(), BatchError> {
    if count == 0 {
        return Ok(());
    }
    let mut attr = batch_attr(
        fd,
        0,
        0,
        keys.as_ptr() as u64,
        values.as_ptr() as u64,
        count as u32,
        elem_flags,
    );
    match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(_) => Ok(()),
        Err(error) => Err(BatchError {
            done: batch_count(&attr),
            error,
        }),
    }
}

/// `BPF_MAP_DELETE_BATCH`: deletes `count` keys (packed), in order, stopping at the first
/// failure (`ENOENT` for a missing key).
pub fn map_delete_batch(fd: BorrowedFd<'_>, keys: &[u8], count: usize) -> Result<(), BatchError> {
    if count == 0 {
        return Ok(());
    }
    let mut attr = batch_attr(fd, 0, 0, keys.as_ptr() as u64, 0, count as u32, 0);
    match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
        Ok(_) => Ok(()),
        Err(error) => Err(BatchError {
            done: batch_count(&attr),
            error,
        }),
    }
}

/// `BPF_MAP_LOOKUP_BATCH` over the whole map, in the map's key order: every key and value,
/// packed. `max_entries` bounds one call's buffer.
pub fn map_lookup_all(
    fd: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    max_entries: usize,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let step = max_entries.clamp(1, 1 << 16);
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut cursor = vec![0u8; key_size];
    let mut first = true;
    loop {
        let at_keys = keys.len();
        let at_values = values.len();
        keys.resize(at_keys + step * key_size, 0);
        values.resize(at_values + step * value_size, 0);
        let mut out = vec![0u8; key_size];
        let mut attr = batch_attr(
            fd,
            if first { 0 } else { cursor.as_ptr() as u64 },
            out.as_mut_ptr() as u64,
            keys[at_keys..].as_mut_ptr() as u64,
            values[at_values..].as_mut_ptr() as u64,
            step as u32,
            0,
        );
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = batch_count(&attr);
        keys.truncate(at_keys + got * key_size);
        values.truncate(at_values + got * value_size);
        match result {
            Ok(_) if got == step => {
                cursor = out;
                first = false;
            }
            Ok(_) => return Ok((keys, values)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok((keys, values)),
            Err(e) => return Err(e),
        }
    }
}

/// Waits for an RCU grace period: when it returns, no XDP program run that started before the
/// call is still running (every run, under test or on a NIC, holds the RCU read lock), so
/// no run can still hold a pointer into map memory that was unreferenced before the call.
///
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu()`. Kernels with `nohz_full`
/// refuse it; then a pause far longer than any program run has to do.
pub fn rcu_grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A `BPF_F_MMAPABLE` array map's values, mapped into this process (shared with the kernel:
/// a store here is a store into the map, seen at once by the programs that read it).
pub struct MappedArray {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl MappedArray {
    /// Maps the first `len` bytes of the array behind `fd` (its values, `elem_size` apart,
    /// where `elem_size` is the value size rounded up to 8), read-write.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of a map fd; the kernel checks the length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap"))?;
        Ok(Self { ptr, len })
    }

    /// The start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length, bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty (mmap refuses a length of 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping as a slice of `T` (an atomic type: the kernel reads it concurrently).
    ///
    /// # Safety
    ///
    /// `T` must be valid for any bit pattern and the mapping's size a multiple of its size.
    pub unsafe fn as_slice<T>(&self) -> &[T] {
        // SAFETY: the mapping is page-aligned, `len` bytes long and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.len / size_of::<T>()) }
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: ptr and len are those of our own mapping.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
