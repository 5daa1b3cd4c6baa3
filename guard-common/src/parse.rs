//! Bounded header parsers, one per header, in the style of xdp-tools' `parsing_helpers.h`.
//!
//! Each parser reads its header at a cursor (a byte offset from the start of the frame),
//! advances the cursor past it and returns what comes next. Every read goes through
//! [`Packet::read`], which is bounds-checked; no enum is ever read straight from packet bytes.
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

/// Bounds-checked access to a frame's bytes.
pub trait Packet {
    /// Length of the frame in bytes.
    fn len(&self) -> usize;

    /// Is the frame empty?
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `N` bytes at `offset`, or `None` if they are not all inside the frame.
    /// Implementations may assume `offset <= MAX_OFFSET`.
    fn read_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// The `N` bytes at `offset`, or `None` if they are not all inside the frame or `offset`
    /// exceeds [`MAX_OFFSET`].
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if offset > MAX_OFFSET {
            return None;
        }
        self.read_at(offset)
    }
}

impl Packet for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }
}

/// A source address, as the allowlist sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// IPv4 source address.
    V4([u8; 4]),
    /// IPv6 source address.
    V6([u8; 16]),
}

/// Where a datagram stands in fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented (or an atomic fragment).
    Whole,
    /// The first fragment: offset 0, more fragments follow.
    First,
    /// Any later fragment: non-zero offset.
    Later,
}

/// What the network-layer parsers learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    /// The source address.
    pub source: Source,
    /// The upper-layer protocol (for a later fragment: the protocol its fragment header names).
    pub protocol: u8,
    /// Fragmentation state.
    pub fragment: Fragment,
    /// Offset just past the IP packet, from its length field (used for first fragments).
    pub end: usize,
}

/// Parses the Ethernet header and up to [`MAX_VLAN_TAGS`] VLAN tags; returns the EtherType of
/// what follows, in host order.
#[inline(always)]
pub fn parse_ethernet<P: Packet + ?Sized>(pkt: &P, cursor: &mut usize) -> Result<u16, Verdict> {
    let eth: [u8; ETH_HLEN] = pkt.read(*cursor).ok_or(Verdict::Malformed)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    *cursor += ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Ok(ethertype);
        }
        let tag: [u8; VLAN_HLEN] = pkt.read(*cursor).ok_or(Verdict::Malformed)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
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
pub fn parse_ipv4<P: Packet + ?Sized>(pkt: &P, cursor: &mut usize) -> Result<Network, Verdict> {
    let start = *cursor;
    let hdr: [u8; 20] = pkt.read(start).ok_or(Verdict::Malformed)?;
    let version = hdr[0] >> 4;
    let ihl = (hdr[0] & 0x0F) as usize;
    if version != 4 || ihl < 5 {
        return Err(Verdict::Malformed);
    }
    let total_len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let fragment = if frag & 0x1FFF != 0 {
        Fragment::Later
    } else if frag & 0x2000 != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    };
    *cursor = start + ihl * 4;
    Ok(Network {
        source: Source::V4([hdr[12], hdr[13], hdr[14], hdr[15]]),
        protocol: hdr[9],
        fragment,
        end: start + total_len,
    })
}

/// Parses an IPv6 header and walks up to [`MAX_EXT_HEADERS`] extension headers (hop-by-hop,
/// routing, destination options, fragment, authentication) to the upper-layer header.
#[inline(always)]
pub fn parse_ipv6<P: Packet + ?Sized>(pkt: &P, cursor: &mut usize) -> Result<Network, Verdict> {
    let start = *cursor;
    let hdr: [u8; 40] = pkt.read(start).ok_or(Verdict::Malformed)?;
    if hdr[0] >> 4 != 6 {
        return Err(Verdict::Malformed);
    }
    let payload_len = u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
    let source: [u8; 16] = pkt.read(start + 8).ok_or(Verdict::Malformed)?;
    let mut net = Network {
        source: Source::V6(source),
        protocol: hdr[6],
        fragment: Fragment::Whole,
        end: start + 40 + payload_len,
    };
    *cursor = start + 40;
    for _ in 0..MAX_EXT_HEADERS {
        match parse_ipv6_ext(pkt, cursor, &mut net)? {
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
/// or a later fragment (nothing more to walk).
#[inline(always)]
fn parse_ipv6_ext<P: Packet + ?Sized>(
    pkt: &P,
    cursor: &mut usize,
    net: &mut Network,
) -> Result<bool, Verdict> {
    let header = net.protocol;
    if !is_ipv6_ext(header) {
        return Ok(false);
    }
    // Every extension header starts with next-header and a length byte; the fragment
    // header's offset field follows.
    let ext: [u8; 4] = pkt.read(*cursor).ok_or(Verdict::Malformed)?;
    net.protocol = ext[0];
    let len = match header {
        IPPROTO_FRAGMENT => {
            pkt.read::<8>(*cursor).ok_or(Verdict::Malformed)?;
            let offset_flags = u16::from_be_bytes([ext[2], ext[3]]);
            if offset_flags & 0xFFF8 != 0 {
                net.fragment = Fragment::Later;
                return Ok(false);
            }
            if offset_flags & 1 != 0 {
                net.fragment = Fragment::First;
            }
            8
        }
        IPPROTO_AH => (ext[1] as usize + 2) * 4,
        _ => (ext[1] as usize + 1) * 8,
    };
    // The whole header must be inside the frame: a truncated one is malformed.
    pkt.read::<1>(*cursor + len - 1).ok_or(Verdict::Malformed)?;
    *cursor += len;
    Ok(true)
}

/// Parses a UDP header; returns the destination port in host order. The whole 8-byte header
/// must be inside the frame.
#[inline(always)]
pub fn parse_udp<P: Packet + ?Sized>(pkt: &P, cursor: &mut usize) -> Result<u16, Verdict> {
    let udp: [u8; 8] = pkt.read(*cursor).ok_or(Verdict::Malformed)?;
    *cursor += 8;
    Ok(u16::from_be_bytes([udp[2], udp[3]]))
}
