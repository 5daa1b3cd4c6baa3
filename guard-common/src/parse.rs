//! Bounded header parsers, one per header, in the style of xdp-tools' `parsing_helpers.h`.
//!
//! Each parser reads its header at a cursor (a byte offset from the start of the frame),
//! advances the cursor past it and returns what comes next. Every read goes through
//! [`Packet::header`], which is bounds-checked; no enum is ever read straight from packet bytes.
//! A parser that cannot go on returns `Err(verdict)`: the frame's final verdict.

use crate::verdict::Verdict;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ service) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88A8;

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 hop-by-hop options header.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv6 routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// IPv6 authentication header.
pub const IPPROTO_AH: u8 = 51;
/// IPv6 destination options header.
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// VLAN tag length.
pub const VLAN_HLEN: usize = 4;
/// VLAN tags the guard looks through (802.1Q and 802.1ad, QinQ).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers the guard walks. RFC 8200 never produces a longer chain; a longer
/// one is dropped as malformed.
pub const MAX_EXT_HEADERS: usize = 8;
/// Reads beyond this offset fail. It bounds every packet pointer for the verifier and is far
/// beyond any header the guard parses on a frame XDP can see.
pub const MAX_OFFSET: usize = 0x3FFF;

/// A header read in place from a frame: plain bytes, so any alignment and any bit pattern is
/// valid, and reading a field is a load from the frame, never a copy of the header.
///
/// # Safety
///
/// The type must be `#[repr(C)]` (or an array) of `u8` and `[u8; N]` fields only: alignment 1,
/// no padding, every bit pattern valid.
pub unsafe trait Header: Sized {}

// SAFETY: bytes.
unsafe impl<const N: usize> Header for [u8; N] {}

/// Bounds-checked access to a frame's headers.
pub trait Packet {
    /// Length of the frame in bytes.
    fn len(&self) -> usize;

    /// Is the frame empty?
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The header at `offset`, or `None` if it is not all inside the frame.
    /// Implementations may assume `offset <= MAX_OFFSET`.
    fn header_at<H: Header>(&self, offset: usize) -> Option<&H>;

    /// The header at `offset`, or `None` if it is not all inside the frame or `offset` exceeds
    /// [`MAX_OFFSET`].
    #[inline(always)]
    fn header<H: Header>(&self, offset: usize) -> Option<&H> {
        if offset > MAX_OFFSET {
            return None;
        }
        self.header_at(offset)
    }
}

impl Packet for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn header_at<H: Header>(&self, offset: usize) -> Option<&H> {
        let end = offset.checked_add(core::mem::size_of::<H>())?;
        let bytes = self.get(offset..end)?;
        // SAFETY: `bytes` holds exactly `size_of::<H>()` bytes, and a `Header` has alignment 1
        // and accepts any bytes.
        Some(unsafe { &*bytes.as_ptr().cast::<H>() })
    }
}

/// Ethernet header.
#[repr(C)]
pub struct EthHdr {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType, big-endian.
    pub ethertype: [u8; 2],
}

/// 802.1Q / 802.1ad tag (after the outer EtherType).
#[repr(C)]
pub struct VlanHdr {
    /// Priority, DEI and VLAN id.
    pub tci: [u8; 2],
    /// The encapsulated EtherType, big-endian.
    pub ethertype: [u8; 2],
}

/// IPv4 header, without options.
#[repr(C)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub version_ihl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Total length, big-endian.
    pub total_len: [u8; 2],
    /// Identification.
    pub id: [u8; 2],
    /// Flags and fragment offset, big-endian.
    pub frag_off: [u8; 2],
    /// Time to live.
    pub ttl: u8,
    /// Upper-layer protocol.
    pub protocol: u8,
    /// Header checksum.
    pub check: [u8; 2],
    /// Source address.
    pub saddr: [u8; 4],
    /// Destination address.
    pub daddr: [u8; 4],
}

/// IPv6 header.
#[repr(C)]
pub struct Ipv6Hdr {
    /// Version, traffic class and flow label.
    pub version_class_flow: [u8; 4],
    /// Payload length, big-endian.
    pub payload_len: [u8; 2],
    /// Next header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
}

/// The first four bytes of every IPv6 extension header the guard walks.
#[repr(C)]
pub struct Ipv6ExtHdr {
    /// Next header.
    pub next_header: u8,
    /// Length, in units that depend on the header.
    pub len: u8,
    /// For a fragment header: offset (13 bits), reserved (2) and the M flag, big-endian.
    pub frag_off: [u8; 2],
}

/// UDP header.
#[repr(C)]
pub struct UdpHdr {
    /// Source port, big-endian.
    pub source: [u8; 2],
    /// Destination port, big-endian.
    pub dest: [u8; 2],
    /// Length, big-endian.
    pub len: [u8; 2],
    /// Checksum.
    pub check: [u8; 2],
}

const _: () = {
    assert!(core::mem::size_of::<EthHdr>() == ETH_HLEN);
    assert!(core::mem::size_of::<VlanHdr>() == VLAN_HLEN);
    assert!(core::mem::size_of::<Ipv4Hdr>() == 20);
    assert!(core::mem::size_of::<Ipv6Hdr>() == 40);
    assert!(core::mem::size_of::<Ipv6ExtHdr>() == 4);
    assert!(core::mem::size_of::<UdpHdr>() == 8);
};

// SAFETY: each is repr(C) with only u8 and [u8; N] fields.
unsafe impl Header for EthHdr {}
// SAFETY: as above.
unsafe impl Header for VlanHdr {}
// SAFETY: as above.
unsafe impl Header for Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Header for Ipv6Hdr {}
// SAFETY: as above.
unsafe impl Header for Ipv6ExtHdr {}
// SAFETY: as above.
unsafe impl Header for UdpHdr {}

/// A source address, as the allowlist sees it: a reference to the address in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source<'a> {
    /// IPv4 source address.
    V4(&'a [u8; 4]),
    /// IPv6 source address.
    V6(&'a [u8; 16]),
}

/// Where a datagram stands in fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented (or an atomic fragment).
    Whole,
    /// The first fragment: offset 0, more fragments follow. Holds the offset just past the IP
    /// packet, from its length field.
    First(usize),
    /// Any later fragment: non-zero offset.
    Later,
}

/// What the network-layer parsers learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network<'a> {
    /// The source address.
    pub source: Source<'a>,
    /// The upper-layer protocol (for a later fragment: the protocol its fragment header names).
    pub protocol: u8,
    /// Fragmentation state.
    pub fragment: Fragment,
}

/// Parses the Ethernet header and up to [`MAX_VLAN_TAGS`] VLAN tags; returns the EtherType of
/// what follows, in host order.
#[inline(always)]
pub fn parse_ethernet<P: Packet + ?Sized>(pkt: &P, cursor: &mut usize) -> Result<u16, Verdict> {
    let eth: &EthHdr = pkt.header(*cursor).ok_or(Verdict::Malformed)?;
    let mut ethertype = u16::from_be_bytes(eth.ethertype);
    *cursor += ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Ok(ethertype);
        }
        let tag: &VlanHdr = pkt.header(*cursor).ok_or(Verdict::Malformed)?;
        ethertype = u16::from_be_bytes(tag.ethertype);
        *cursor += VLAN_HLEN;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // A third tag: beyond what the guard looks through (see the README).
        return Err(Verdict::Malformed);
    }
    Ok(ethertype)
}

/// Parses an IPv4 header with any valid IHL (options are skipped).
#[inline(always)]
pub fn parse_ipv4<'a, P: Packet + ?Sized>(
    pkt: &'a P,
    cursor: &mut usize,
) -> Result<Network<'a>, Verdict> {
    let start = *cursor;
    let hdr: &Ipv4Hdr = pkt.header(start).ok_or(Verdict::Malformed)?;
    // Nearly every packet has no options: a constant header length keeps the next header's
    // offset known without waiting for this load (a branch, not a data dependency).
    let ihl = if hdr.version_ihl == 0x45 {
        5
    } else {
        let ihl = (hdr.version_ihl & 0x0F) as usize;
        if hdr.version_ihl >> 4 != 4 || ihl < 5 {
            return Err(Verdict::Malformed);
        }
        ihl
    };
    *cursor = start + ihl * 4;
    // Flags (reserved, DF, MF) and a 13-bit offset.
    let [flags_offset, offset_low] = hdr.frag_off;
    let fragment = if flags_offset & 0x1F != 0 || offset_low != 0 {
        Fragment::Later
    } else if flags_offset & 0x20 != 0 {
        Fragment::First(start + u16::from_be_bytes(hdr.total_len) as usize)
    } else {
        Fragment::Whole
    };
    Ok(Network {
        source: Source::V4(&hdr.saddr),
        protocol: hdr.protocol,
        fragment,
    })
}

/// The source address of an IP frame (Ethernet, up to [`MAX_VLAN_TAGS`] VLAN tags, then an
/// IPv4 or IPv6 header): the address [`crate::classify()`] judges a datagram of the frame by.
/// Reading it needs no more than the IP header, so that a caller that did not keep the source
/// (the XDP program, which samples 1 drop in N for top talkers) can read it again.
#[inline(always)]
pub fn source<P: Packet + ?Sized>(pkt: &P) -> Option<Source<'_>> {
    let mut cursor = 0;
    match parse_ethernet(pkt, &mut cursor).ok()? {
        ETH_P_IP => pkt
            .header::<Ipv4Hdr>(cursor)
            .map(|ip| Source::V4(&ip.saddr)),
        ETH_P_IPV6 => pkt
            .header::<Ipv6Hdr>(cursor)
            .map(|ip| Source::V6(&ip.saddr)),
        _ => None,
    }
}

/// Parses an IPv6 header and walks up to [`MAX_EXT_HEADERS`] extension headers (hop-by-hop,
/// routing, destination options, fragment, authentication) to the upper-layer header.
#[inline(always)]
pub fn parse_ipv6<'a, P: Packet + ?Sized>(
    pkt: &'a P,
    cursor: &mut usize,
) -> Result<Network<'a>, Verdict> {
    let start = *cursor;
    let hdr: &Ipv6Hdr = pkt.header(start).ok_or(Verdict::Malformed)?;
    if hdr.version_class_flow[0] >> 4 != 6 {
        return Err(Verdict::Malformed);
    }
    let end = start + 40 + u16::from_be_bytes(hdr.payload_len) as usize;
    let mut net = Network {
        source: Source::V6(&hdr.saddr),
        protocol: hdr.next_header,
        fragment: Fragment::Whole,
    };
    *cursor = start + 40;
    for _ in 0..MAX_EXT_HEADERS {
        match parse_ipv6_ext(pkt, cursor, &mut net, end)? {
            true => continue,
            false => return Ok(net),
        }
    }
    if is_ipv6_ext(net.protocol) {
        return Err(Verdict::DroppedMalformed);
    }
    Ok(net)
}

/// Is `next_header` an extension header the guard walks?
#[inline(always)]
pub fn is_ipv6_ext(next_header: u8) -> bool {
    matches!(
        next_header,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

/// Parses one IPv6 extension header at `cursor`, if `net.protocol` names one: advances the
/// cursor, updates `net` and returns `Ok(true)`. Returns `Ok(false)` at an upper-layer header
/// or a later fragment (nothing more to walk). `end` is the offset just past the IPv6 packet.
#[inline(always)]
fn parse_ipv6_ext<P: Packet + ?Sized>(
    pkt: &P,
    cursor: &mut usize,
    net: &mut Network<'_>,
    end: usize,
) -> Result<bool, Verdict> {
    let header = net.protocol;
    if !is_ipv6_ext(header) {
        return Ok(false);
    }
    let ext: &Ipv6ExtHdr = pkt.header(*cursor).ok_or(Verdict::Malformed)?;
    net.protocol = ext.next_header;
    let len = match header {
        IPPROTO_FRAGMENT => {
            // The fragment header is 8 bytes long.
            pkt.header::<[u8; 8]>(*cursor).ok_or(Verdict::Malformed)?;
            let offset_flags = u16::from_be_bytes(ext.frag_off);
            if offset_flags & 0xFFF8 != 0 {
                net.fragment = Fragment::Later;
                return Ok(false);
            }
            if offset_flags & 1 != 0 {
                net.fragment = Fragment::First(end);
            }
            8
        }
        IPPROTO_AH => (ext.len as usize + 2) * 4,
        _ => (ext.len as usize + 1) * 8,
    };
    // The whole header must be inside the frame: a truncated one is malformed.
    pkt.header::<[u8; 1]>(*cursor + len - 1)
        .ok_or(Verdict::Malformed)?;
    *cursor += len;
    Ok(true)
}

/// Parses a UDP header; returns the destination port's bytes as on the wire (big-endian), the
/// form the protected-port table is indexed by. The whole 8-byte header must be inside the
/// frame.
#[inline(always)]
pub fn parse_udp<P: Packet + ?Sized>(pkt: &P, cursor: &mut usize) -> Result<[u8; 2], Verdict> {
    let udp: &UdpHdr = pkt.header(*cursor).ok_or(Verdict::Malformed)?;
    *cursor += 8;
    Ok(udp.dest)
}
