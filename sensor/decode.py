"""Vectorized header decoding: a chunk of raw frames -> one ``PACKET_DTYPE`` batch.

Why vectorized: a per-packet Python decoder costs microseconds per frame, which caps a sensor far below line
rate. Here every step is a numpy operation over *all rows still being decoded*: fixed-size headers are
gathered for the whole chunk with one fancy-indexing call (``buf[pos[:, None] + arange(width)]``) and fields
are read as big-endian column views. Variable-length parts are handled by iterating over **layers, not
packets**: the VLAN/MPLS/PPPoE loop runs while any row still has an encapsulation tag, the IPv6 loop while
any row still has an extension header, so the Python-level loop count is the nesting depth (1-3 in practice).

Every row ends in exactly one state: fully decoded (``malformed == OK``), or stopped at the first layer that
could not be decoded with the reason in ``malformed``; fields of the layers decoded before that point stay
filled (a truncated TCP header still has its addresses); reasons are ``sensor.packets.Malformed`` codes.

Link types: Ethernet (1), Linux SLL (113) and SLL2 (276), raw IP (101, 12, 14, 228, 229), BSD null (0, host
byte order) and OpenBSD loop (108), PPP (9) and Cisco HDLC (104), 802.11 (105) and radiotap (127) data
frames with LLC/SNAP. Tunnels are unwrapped as Zeek does (GRE incl. ERSPAN I/II/III, transparent Ethernet
bridging and PPTP; IP-in-IP; GTP-U; VXLAN): the rows carrying one are decoded again from the inner header,
as one more layer over the rows, up to ``MAX_TUNNEL_DEPTH``. A GRE/IP-in-IP row becomes the inner packet;
a GTP/VXLAN frame keeps its outer UDP row and gets an extra inner row right after it (``tunnel`` column,
``sensor.packets.frame_rows``). Reasons:

- UNKNOWN_LINKTYPE: link type not decoded (PPI, Prism ...); the row is kept so it is counted.
- TRUNCATED_LINK: frame shorter than its link header or an encapsulation header, or deeper than
  ``MAX_ENCAP_LAYERS`` tags.
- NON_IP: ARP, LLDP, 802.3/LLC, PPP control ...: not an error; ``ethertype`` says what it was.
- TRUNCATED_IP: IP header cut off, or version/IHL invalid.
- BAD_IP_LENGTH: IP total length below the header length or beyond the frame on the wire (or an IPv6
  extension header running past the payload length).
- TRUNCATED_EXT_HEADER: IPv6 extension header cut off by the snap length (or a chain deeper than
  ``MAX_EXT_HEADERS``).
- TRUNCATED_TRANSPORT: TCP (20 bytes), UDP (8), ICMP/ICMPv6 (8) header not captured or not inside the IP
  payload; or a TCP data offset below 20 / beyond the IP payload.

Non-first fragments (IPv4 offset > 0, IPv6 fragment header with offset > 0) carry no transport header:
ports and flags stay 0, ``payload_len`` is the fragment's IP payload.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from sensor.packets import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PACKET_DTYPE, TUNNEL_GRE,
                            TUNNEL_GTP, TUNNEL_IPIP, TUNNEL_VXLAN, UDP_TUNNELS, V4_MAPPED_LO_PREFIX, Malformed)

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD = 0x8100, 0x88A8, 0x9100
ETH_MPLS_UC, ETH_MPLS_MC, ETH_PPPOE_SESSION = 0x8847, 0x8848, 0x8864
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057

MAX_ENCAP_LAYERS = 16  # VLAN + MPLS labels + PPPoE per frame; a deeper stack is hostile or broken
MAX_EXT_HEADERS = 16  # IPv6 extension headers followed per packet
MAX_TUNNEL_DEPTH = 2  # tunnels unwrapped per frame (Zeek's Tunnel::max_depth default)
MAX_GTP_EXT_HEADERS = 8

IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE = 4, 41, 47
GTP_U_PORT, VXLAN_PORT = 2152, 4789
GRE_IPV4, GRE_IPV6, GRE_TEB, GRE_ERSPAN_1_2, GRE_ERSPAN_3, GRE_PPTP = 0x0800, 0x86DD, 0x6558, 0x88BE, 0x22EB, 0x880B

# Link types (LINKTYPE_* values as stored in pcap/pcapng) -> short name used in statistics.
LINKTYPE_NAMES: dict[int, str] = {
    0: "null", 1: "ethernet", 9: "ppp", 12: "raw", 14: "raw", 101: "raw", 104: "c_hdlc", 105: "ieee802_11",
    108: "loop", 113: "linux_sll", 119: "prism", 127: "ieee802_11_radiotap", 192: "ppi", 228: "ipv4",
    229: "ipv6", 276: "linux_sll2",
}
RAW_LINKTYPES = (12, 14, 101, 228, 229)
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6 = 1, 101, 228, 229
LINKTYPE_PPP, LINKTYPE_C_HDLC, LINKTYPE_802_11, LINKTYPE_RADIOTAP = 9, 104, 105, 127
LLC_SNAP = np.array([0xAA, 0xAA, 0x03, 0, 0, 0], dtype=np.uint8)  # 802.2 SNAP, encapsulated-Ethernet OUI
# BSD null/loop address families that mean IPv6 (Linux, NetBSD/OpenBSD, FreeBSD, Darwin).
AF_INET = 2
AF_INET6_VALUES = (10, 24, 28, 30)
IPV6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options (length in 8-octet units)
IPV6_FRAGMENT = 44

_AR = np.arange(64, dtype=np.int64)
# Columns the decoder fills; the rest (timestamps, lengths, link) come from the caller.
DECODED_FIELDS = tuple(n for n in PACKET_DTYPE.names
                       if n not in ("ts_ns", "link_id", "linktype", "caplen", "wirelen"))


def _take(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """``width`` bytes at each position as an (n, width) matrix (callers checked they are captured).

    Indexes the rows of a sliding-window view of ``buf``: numpy then copies ``width`` contiguous bytes per
    row, several times faster than gathering ``n * width`` single bytes.
    """
    if not len(pos):
        return np.zeros((0, width), dtype=np.uint8)
    windows = as_strided(buf, shape=(len(buf) - width + 1, width), strides=(1, 1), writeable=False)
    return windows[pos]


def _be(mat: np.ndarray, at: int, size: int) -> np.ndarray:
    """Big-endian unsigned field of ``size`` bytes at column ``at`` of a gathered header matrix."""
    if size == 1:
        return mat[:, at]
    return np.ascontiguousarray(mat[:, at:at + size]).view(f">u{size}").ravel()


class _Decoder:
    """State of one ``decode_frames`` call: the output batch plus per-row cursor and ethertype.

    ``rows`` arrays passed between steps are indices of rows still being decoded; a step returns the subset
    that survived and marks the others in ``out["malformed"]``.
    """

    def __init__(self, buf: np.ndarray, n: int, start: np.ndarray, end: np.ndarray, wire_end: np.ndarray) -> None:
        self.buf, self.start, self.end, self.wire_end = buf, start, end, wire_end
        # Decoded columns as contiguous arrays: scattering into them is several times cheaper than into the
        # strided fields of the structured batch, which is filled once at the end.
        self.out = {name: np.zeros(n, PACKET_DTYPE[name]) for name in DECODED_FIELDS}
        self.pos = start.copy()  # per row: where the next header starts
        self.etype = np.zeros(n, dtype=np.int64)  # per row: EtherType of the next header
        self.l4pos = np.full(n, -1, dtype=np.int64)  # per row: where the transport header starts (-1: none)
        self.l4len = np.zeros(n, dtype=np.int64)  # per row: IP payload length from there

    def fail(self, rows: np.ndarray, bad: np.ndarray, reason: Malformed) -> np.ndarray:
        """Mark ``rows[bad]`` with ``reason``; return the rows that go on."""
        if bad.any():
            self.out["malformed"][rows[bad]] = reason
            return rows[~bad]
        return rows

    def captured(self, rows: np.ndarray, pos: np.ndarray, need: int | np.ndarray) -> np.ndarray:
        """Boolean per row: ``need`` bytes are captured at ``pos``."""
        return self.end[rows] - pos >= need

    # ------------------------------------------------------------------------------------------ link layer
    def link_layer(self, linktypes: np.ndarray) -> np.ndarray:
        first, last = int(linktypes.min()), int(linktypes.max())
        codes = [first] if first == last else np.unique(linktypes).tolist()
        alive = []
        for code in codes:
            rows = np.arange(len(linktypes)) if first == last else np.flatnonzero(linktypes == code)
            alive.append(self._link(code, rows))
        return np.sort(np.concatenate(alive)) if len(alive) > 1 else alive[0]

    def _link(self, code: int, rows: np.ndarray) -> np.ndarray:
        start, buf = self.start[rows], self.buf
        if code in RAW_LINKTYPES:
            # No link header: the IP version nibble says which IP; the IP step rejects anything else.
            if code == 228 or code == 229:
                self.etype[rows] = ETH_IPV4 if code == 228 else ETH_IPV6
            else:
                has = self.captured(rows, start, 1)
                nib = np.where(has, buf[np.where(has, start, 0)] >> 4, 4)
                self.etype[rows] = np.where(nib == 6, ETH_IPV6, ETH_IPV4)
            return rows
        if code == LINKTYPE_PPP:
            return self._ppp(rows)
        if code == LINKTYPE_802_11:
            return self._ieee802_11(rows, start)
        if code == LINKTYPE_RADIOTAP:
            return self._radiotap(rows)
        hlen = {1: 14, 113: 16, 276: 20, 0: 4, 108: 4, LINKTYPE_C_HDLC: 4}.get(code)
        if hlen is None:
            return self.fail(rows, np.ones(len(rows), bool), Malformed.UNKNOWN_LINKTYPE)
        rows = self.fail(rows, ~self.captured(rows, start, hlen), Malformed.TRUNCATED_LINK)
        start = self.start[rows]
        hdr = _take(buf, start, hlen)
        if code == 1:
            etype = _be(hdr, 12, 2).astype(np.int64)
            etype[etype < 0x0600] = 0  # 802.3 length field: LLC/SNAP frame, not IP
        elif code == 113:
            etype = _be(hdr, 14, 2).astype(np.int64)
        elif code == 276:
            etype = _be(hdr, 0, 2).astype(np.int64)
        elif code == LINKTYPE_C_HDLC:  # address, control, then an EtherType
            etype = _be(hdr, 2, 2).astype(np.int64)
        else:  # BSD loopback: address family, host byte order of the writer (0) or network order (108)
            af = _be(hdr, 0, 4).astype(np.int64)
            if code == 0:
                af = np.where(af & 0xFFFF0000, af.astype(">u4").byteswap().astype(np.int64), af)
                af = np.where(af & 0xFFFF0000, af >> 16, af)
            etype = np.where(af == AF_INET, ETH_IPV4, np.where(np.isin(af, AF_INET6_VALUES), ETH_IPV6, 0))
        self.etype[rows] = etype
        self.pos[rows] = start + hlen
        return rows

    def _ppp(self, rows: np.ndarray) -> np.ndarray:
        """PPP (RFC 1661/1662): optional 0xFF 0x03 address/control, then a 1- or 2-byte protocol."""
        rows = self.fail(rows, ~self.captured(rows, self.start[rows], 2), Malformed.TRUNCATED_LINK)
        start, end = self.start[rows], self.end[rows]
        # Up to 4 bytes, clipped to the frame: the header length is only known after reading them.
        hdr = self.buf[np.minimum(start[:, None] + _AR[:4], end[:, None] - 1)]
        framed = (hdr[:, 0] == 0xFF) & (hdr[:, 1] == 0x03)
        at = np.where(framed, 2, 0)
        idx = np.arange(len(rows))
        first = hdr[idx, at].astype(np.int64)
        compressed = (first & 1) == 1  # protocol-field compression: an odd first byte is the whole field
        hlen = at + np.where(compressed, 1, 2)
        short = end - start < hlen
        proto = np.where(compressed, first, first << 8 | hdr[idx, np.minimum(at + 1, 3)])
        self.etype[rows] = np.where(proto == PPP_IPV4, ETH_IPV4, np.where(proto == PPP_IPV6, ETH_IPV6, 0))
        self.pos[rows] = start + hlen
        return self.fail(rows, short, Malformed.TRUNCATED_LINK)

    def _radiotap(self, rows: np.ndarray) -> np.ndarray:
        """Radiotap: a little-endian header length at offset 2, then an 802.11 frame (as Zeek skips it)."""
        rows = self.fail(rows, ~self.captured(rows, self.start[rows], 4), Malformed.TRUNCATED_LINK)
        start = self.start[rows]
        hlen = _take(self.buf, start + 2, 2)[:, ::-1].copy().view(">u2").ravel().astype(np.int64)
        short = ~self.captured(rows, start, hlen + 1)
        rows, start, hlen = self._keep(rows, short, Malformed.TRUNCATED_LINK, start, hlen)
        return self._ieee802_11(rows, start + hlen)

    def _ieee802_11(self, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """802.11 data frame with LLC/SNAP, with Zeek's rules.

        Management/control frames, null-data subtypes, protected (encrypted) QoS data and A-MSDU aggregates
        carry no IP we can read: NON_IP with ethertype 0. The header is 24 bytes, +6 with four addresses,
        +2 for QoS data; then 802.2 LLC/SNAP (AA AA 03 00 00 00) and the EtherType.
        """
        buf = self.buf
        short = ~self.captured(rows, pos, 25)  # Zeek wants more than the 24-byte minimal header
        rows, pos = self.fail(rows, short, Malformed.TRUNCATED_LINK), pos[~short]
        fc, fl = buf[pos].astype(np.int64), buf[pos + 1].astype(np.int64)
        qos = ((fc >> 4) & 8) != 0
        hlen = 24 + np.where((fl & 3) == 3, 6, 0)
        data = (((fc >> 2) & 2) != 0) & (((fc >> 4) & 4) == 0)
        short = data & ~self.captured(rows, pos, hlen + np.where(qos, 2, 0) + 8)
        rows, pos, fc, fl, qos, hlen, data = self._keep(rows, short, Malformed.TRUNCATED_LINK,
                                                         pos, fc, fl, qos, hlen, data)
        amsdu = qos & ((buf[np.where(data & qos, pos + hlen, pos)] & 0x80) != 0)
        hlen = hlen + np.where(qos, 2, 0)
        data &= ~amsdu & ~(qos & ((fl & 0x40) != 0))
        llc = _take(buf, np.where(data, pos + hlen, pos), 8)
        snap = data & (llc[:, :6] == LLC_SNAP).all(axis=1)
        self.etype[rows] = np.where(snap, _be(llc, 6, 2), 0)
        self.pos[rows] = pos + hlen + 8
        return rows

    def _keep(self, rows: np.ndarray, bad: np.ndarray, reason: Malformed, *cols: np.ndarray):
        """``fail`` plus the same selection applied to per-row companion arrays."""
        rows = self.fail(rows, bad, reason)
        return (rows, *(c[~bad] for c in cols))

    # ------------------------------------------------------------------------------------- encapsulations
    def encapsulations(self, rows: np.ndarray) -> np.ndarray:
        """Peel 802.1Q/QinQ tags, MPLS labels and PPPoE session headers, one layer per pass over the rows."""
        vlan_seen = np.zeros(len(self.etype), dtype=bool)
        for _ in range(MAX_ENCAP_LAYERS):
            et = self.etype[rows]
            is_vlan = (et == ETH_VLAN) | (et == ETH_QINQ) | (et == ETH_QINQ_OLD)
            is_mpls = (et == ETH_MPLS_UC) | (et == ETH_MPLS_MC)
            is_pppoe = et == ETH_PPPOE_SESSION
            tagged = is_vlan | is_mpls | is_pppoe
            if not tagged.any():
                return rows
            need = np.where(is_pppoe, 8, 4)
            short = tagged & ~self.captured(rows, self.pos[rows], need)
            if short.any():
                rows = self.fail(rows, short, Malformed.TRUNCATED_LINK)
                is_vlan, is_mpls, is_pppoe = is_vlan[~short], is_mpls[~short], is_pppoe[~short]
            self._vlan(rows[is_vlan], vlan_seen)
            self._mpls(rows[is_mpls])
            self._pppoe(rows[is_pppoe])
        et = self.etype[rows]
        deep = np.isin(et, (ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD, ETH_MPLS_UC, ETH_MPLS_MC, ETH_PPPOE_SESSION))
        return self.fail(rows, deep, Malformed.TRUNCATED_LINK)

    def _vlan(self, rows: np.ndarray, vlan_seen: np.ndarray) -> None:
        if not len(rows):
            return
        pos = self.pos[rows]
        hdr = _take(self.buf, pos, 4)
        outer = ~vlan_seen[rows]  # VLAN id 0 (priority tag) is valid, so "seen" is tracked separately
        self.out["vlan_id"][rows[outer]] = _be(hdr, 0, 2)[outer] & 0x0FFF
        vlan_seen[rows] = True
        self.etype[rows] = _be(hdr, 2, 2)
        self.pos[rows] = pos + 4

    def _mpls(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        pos = self.pos[rows] + 4
        self.pos[rows] = pos
        bottom = (self.buf[pos - 2] & 1).astype(bool)
        rows, pos = rows[bottom], pos[bottom]
        # Below the label stack there is no type field: MPLS carries IP here (as Zeek assumes); the version
        # nibble says which, anything else (pseudowire control word ...) is not IP.
        has = self.captured(rows, pos, 1)
        nib = np.where(has, self.buf[np.where(has, pos, 0)] >> 4, 4)  # nothing left -> IP step flags it
        self.etype[rows] = np.where(nib == 4, ETH_IPV4, np.where(nib == 6, ETH_IPV6, 0))

    def _pppoe(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        pos = self.pos[rows]
        proto = _be(_take(self.buf, pos + 6, 2), 0, 2)
        self.etype[rows] = np.where(proto == PPP_IPV4, ETH_IPV4, np.where(proto == PPP_IPV6, ETH_IPV6, 0))
        self.pos[rows] = pos + 8

    # ------------------------------------------------------------------------------------------------ IP
    def ip(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode IPv4/IPv6; returns (rows with a transport header to decode, its position, its length)."""
        et = self.etype[rows]
        self.out["ethertype"][rows] = et
        is4, is6 = et == ETH_IPV4, et == ETH_IPV6
        self.fail(rows, ~(is4 | is6), Malformed.NON_IP)
        r4, p4, l4 = self._ipv4(rows[is4])
        r6, p6, l6 = self._ipv6(rows[is6])
        return np.concatenate([r4, r6]), np.concatenate([p4, p6]), np.concatenate([l4, l6])

    def _room(self, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # Bytes on the wire from pos (the snap length may cut the payload legitimately); the captured end
        # is used when a broken record claims a wire length below its captured length.
        return np.maximum(self.wire_end[rows], self.end[rows]) - pos

    def _ip_length_ok(self, rows: np.ndarray, pos: np.ndarray, ip_len: np.ndarray, hdr_len) -> np.ndarray:
        return (ip_len >= hdr_len) & (ip_len <= self._room(rows, pos))

    def _ipv4(self, rows: np.ndarray):
        out, buf = self.out, self.buf
        rows = self.fail(rows, ~self.captured(rows, self.pos[rows], 20), Malformed.TRUNCATED_IP)
        pos = self.pos[rows]
        h = _take(buf, pos, 20)
        ihl = (h[:, 0] & 0x0F).astype(np.int64) * 4
        bad = ((h[:, 0] >> 4) != 4) | (ihl < 20) | ~self.captured(rows, pos, ihl)
        if bad.any():
            rows, pos, h, ihl = self.fail(rows, bad, Malformed.TRUNCATED_IP), pos[~bad], h[~bad], ihl[~bad]
        ip_len = _be(h, 2, 2).astype(np.int64)
        tso = ip_len == 0
        if tso.any():  # TCP segmentation offload zeroes the field in host captures: the frame has the length
            ip_len[tso] = self._room(rows[tso], pos[tso])
        frag = _be(h, 6, 2)
        offset = (frag & 0x1FFF).astype(np.int64) * 8
        mf = (frag >> 13) & 1
        out["ip_version"][rows] = 4
        out["ip_len"][rows] = ip_len
        out["frag_id"][rows] = _be(h, 4, 2)
        out["frag_offset"][rows] = offset
        out["frag_mf"][rows] = mf
        out["frag_df"][rows] = (frag >> 14) & 1
        out["is_fragment"][rows] = (offset > 0) | (mf == 1)
        out["ttl"][rows] = h[:, 8]
        out["proto"][rows] = h[:, 9]
        out["src_lo"][rows] = V4_MAPPED_LO_PREFIX | _be(h, 12, 4).astype(np.uint64)
        out["dst_lo"][rows] = V4_MAPPED_LO_PREFIX | _be(h, 16, 4).astype(np.uint64)
        good = self._ip_length_ok(rows, pos, ip_len, ihl)
        rows = self.fail(rows, ~good, Malformed.BAD_IP_LENGTH)
        pos, ihl, ip_len, offset = pos[good] + ihl[good], ihl[good], ip_len[good], offset[good]
        return self._transport_or_fragment(rows, pos, ip_len - ihl, offset > 0)

    def _transport_or_fragment(self, rows, pos, l4_len, nonfirst):
        """Non-first fragments end here with their IP payload as payload_len; the rest go on."""
        if nonfirst.any():
            self.out["payload_len"][rows[nonfirst]] = l4_len[nonfirst]
            keep = ~nonfirst
            return rows[keep], pos[keep], l4_len[keep]
        return rows, pos, l4_len

    def _ipv6(self, rows: np.ndarray):
        out, buf = self.out, self.buf
        rows = self.fail(rows, ~self.captured(rows, self.pos[rows], 40), Malformed.TRUNCATED_IP)
        pos = self.pos[rows]
        h = _take(buf, pos, 40)
        bad = (h[:, 0] >> 4) != 6
        if bad.any():
            rows, pos, h = self.fail(rows, bad, Malformed.TRUNCATED_IP), pos[~bad], h[~bad]
        ip_len = _be(h, 4, 2).astype(np.int64) + 40
        addr = np.ascontiguousarray(h[:, 8:40]).view(">u8")
        out["ip_version"][rows] = 6
        out["ip_len"][rows] = ip_len
        out["ttl"][rows] = h[:, 7]
        out["src_hi"][rows], out["src_lo"][rows] = addr[:, 0], addr[:, 1]
        out["dst_hi"][rows], out["dst_lo"][rows] = addr[:, 2], addr[:, 3]
        nh = h[:, 6].astype(np.int64)
        good = self._ip_length_ok(rows, pos, ip_len, 40)
        rows = self.fail(rows, ~good, Malformed.BAD_IP_LENGTH)
        return self._ipv6_extensions(rows, pos[good] + 40, ip_len[good] - 40, nh[good])

    def _ipv6_extensions(self, rows, pos, l4_len, nh):
        """Follow the extension-header chain one header per pass over the rows that still have one."""
        out, buf = self.out, self.buf
        done_rows, done_pos, done_len = [], [], []
        for _ in range(MAX_EXT_HEADERS + 1):
            ext = np.isin(nh, IPV6_EXT_HEADERS) | (nh == IPV6_FRAGMENT)
            out["proto"][rows[~ext]] = nh[~ext]
            done_rows.append(rows[~ext]), done_pos.append(pos[~ext]), done_len.append(l4_len[~ext])
            rows, pos, l4_len, nh = rows[ext], pos[ext], l4_len[ext], nh[ext]
            if not len(rows):
                break
            cut = ~self.captured(rows, pos, 8)
            if cut.any():
                rows = self.fail(rows, cut, Malformed.TRUNCATED_EXT_HEADER)
                pos, l4_len, nh = pos[~cut], l4_len[~cut], nh[~cut]
            h = _take(buf, pos, 8)
            is_frag = nh == IPV6_FRAGMENT
            hlen = np.where(is_frag, 8, (h[:, 1].astype(np.int64) + 1) * 8)
            cut = ~self.captured(rows, pos, hlen)
            over = ~cut & (hlen > l4_len)
            rows = self.fail(rows, cut, Malformed.TRUNCATED_EXT_HEADER)
            keep = ~cut
            rows = self.fail(rows, over[keep], Malformed.BAD_IP_LENGTH)
            keep &= ~over
            pos, l4_len, nh, h, hlen, is_frag = pos[keep], l4_len[keep], nh[keep], h[keep], hlen[keep], is_frag[keep]
            nonfirst = np.zeros(len(rows), dtype=bool)
            if is_frag.any():
                fr, fh = rows[is_frag], h[is_frag]
                word = _be(fh, 2, 2)
                out["is_fragment"][fr] = 1
                out["frag_offset"][fr] = word & 0xFFF8
                out["frag_mf"][fr] = word & 1
                out["frag_id"][fr] = _be(fh, 4, 4)
                nonfirst[is_frag] = (word & 0xFFF8) > 0
            nh = h[:, 0].astype(np.int64)
            pos, l4_len = pos + hlen, l4_len - hlen
            if nonfirst.any():
                out["proto"][rows[nonfirst]] = nh[nonfirst]
                rows, pos, l4_len = self._transport_or_fragment(rows, pos, l4_len, nonfirst)
                nh = nh[~nonfirst]
        else:
            rows = self.fail(rows, np.ones(len(rows), bool), Malformed.TRUNCATED_EXT_HEADER)
        return np.concatenate(done_rows), np.concatenate(done_pos), np.concatenate(done_len)

    # ----------------------------------------------------------------------------------------- transport
    def transport(self, rows: np.ndarray, pos: np.ndarray, l4_len: np.ndarray) -> None:
        out = self.out
        proto = out["proto"][rows]
        version = out["ip_version"][rows]
        is_tcp = proto == IPPROTO_TCP
        is_udp = proto == IPPROTO_UDP
        is_icmp = ((proto == IPPROTO_ICMP) & (version == 4)) | ((proto == IPPROTO_ICMPV6) & (version == 6))
        other = ~(is_tcp | is_udp | is_icmp)
        self.l4pos[rows], self.l4len[rows] = pos, l4_len
        out["payload_len"][rows[other]] = l4_len[other]
        self._tcp(rows[is_tcp], pos[is_tcp], l4_len[is_tcp])
        self._udp(rows[is_udp], pos[is_udp], l4_len[is_udp])
        self._icmp(rows[is_icmp], pos[is_icmp], l4_len[is_icmp])

    def _header(self, rows, pos, l4_len, size):
        """Rows whose ``size``-byte transport header is captured and inside the IP payload, and its bytes."""
        ok = self.captured(rows, pos, size) & (l4_len >= size)
        rows = self.fail(rows, ~ok, Malformed.TRUNCATED_TRANSPORT)
        return rows, _take(self.buf, pos[ok], size), l4_len[ok]

    def _tcp(self, rows, pos, l4_len) -> None:
        out = self.out
        rows, h, l4_len = self._header(rows, pos, l4_len, 20)
        out["sport"][rows] = _be(h, 0, 2)
        out["dport"][rows] = _be(h, 2, 2)
        out["tcp_seq"][rows] = _be(h, 4, 4)
        out["tcp_ack"][rows] = _be(h, 8, 4)
        out["tcp_flags"][rows] = ((h[:, 12].astype(np.uint16) & 1) << 8) | h[:, 13]
        out["tcp_win"][rows] = _be(h, 14, 2)
        out["tcp_urp"][rows] = _be(h, 18, 2)
        doff = (h[:, 12] >> 4).astype(np.int64) * 4
        bad = (doff < 20) | (doff > l4_len)
        out["payload_len"][rows[~bad]] = (l4_len - doff)[~bad]
        self.fail(rows, bad, Malformed.TRUNCATED_TRANSPORT)

    def _udp(self, rows, pos, l4_len) -> None:
        rows, h, l4_len = self._header(rows, pos, l4_len, 8)
        self.out["sport"][rows] = _be(h, 0, 2)
        self.out["dport"][rows] = _be(h, 2, 2)
        self.out["payload_len"][rows] = l4_len - 8

    def _icmp(self, rows, pos, l4_len) -> None:
        rows, h, l4_len = self._header(rows, pos, l4_len, 8)
        self.out["icmp_type"][rows] = h[:, 0]
        self.out["icmp_code"][rows] = h[:, 1]
        self.out["payload_len"][rows] = l4_len - 8

    # ------------------------------------------------------------------------------------------- tunnels
    def tunnels(self):
        """Rows carrying a tunnel Zeek unwraps, as (rows, inner start, inner captured end, inner wire end,
        inner link type, TUNNEL_* kind), or None. The inner packet is decoded like a frame of that link type.
        """
        out = self.out
        proto = out["proto"]
        sport, dport = out["sport"], out["dport"]
        udp_port = (sport == GTP_U_PORT) | (dport == GTP_U_PORT) | (sport == VXLAN_PORT) | (dport == VXLAN_PORT)
        cand = ((proto == IPPROTO_GRE) | (proto == IPPROTO_IPIP) | (proto == IPPROTO_IPV6) |
                ((proto == IPPROTO_UDP) & udp_port)) & (out["malformed"] == 0) & (self.l4pos >= 0)
        if not cand.any():
            return None
        rows = np.flatnonzero(cand)
        proto, pos, length = proto[rows], self.l4pos[rows], self.l4len[rows]
        found = []  # (rows, inner offset from pos, inner link, kind)
        ipip = (proto == IPPROTO_IPIP) | (proto == IPPROTO_IPV6)
        found.append((rows[ipip], np.zeros(ipip.sum(), np.int64),
                      np.where(proto[ipip] == IPPROTO_IPIP, LINKTYPE_IPV4, LINKTYPE_IPV6), TUNNEL_IPIP))
        gre = proto == IPPROTO_GRE
        found.append((*self._gre(rows[gre], pos[gre], length[gre]), TUNNEL_GRE))
        udp = proto == IPPROTO_UDP
        r, p, ln, dp = rows[udp], pos[udp] + 8, length[udp] - 8, dport[rows[udp]]
        gtp = (dp == GTP_U_PORT) | ((sport[r] == GTP_U_PORT) & (dp != VXLAN_PORT))
        found.append((*self._gtp(r[gtp], p[gtp], ln[gtp]), TUNNEL_GTP))
        found.append((*self._vxlan(r[~gtp], p[~gtp], ln[~gtp]), TUNNEL_VXLAN))
        rows = np.concatenate([f[0] for f in found])
        if not len(rows):
            return None
        skip = np.concatenate([f[1] for f in found])
        link = np.concatenate([f[2] for f in found]).astype(np.int64)
        kind = np.concatenate([np.full(len(f[0]), f[3], np.int64) for f in found])
        if IPPROTO_UDP in proto:  # UDP rows: the tunnel starts after the 8-byte UDP header
            skip = skip + np.where(out["proto"][rows] == IPPROTO_UDP, 8, 0)
        start = self.l4pos[rows] + skip
        payload_end = self.l4pos[rows] + self.l4len[rows]
        # A first fragment holds only the start of the inner packet: its lengths cannot be checked here.
        frag = out["is_fragment"][rows] != 0
        wire_end = np.where(frag, start + 0xFFFF, payload_end)
        end = np.minimum(self.end[rows], np.where(frag, self.end[rows], payload_end))
        return rows, start, end, wire_end, link, kind

    def _gre(self, rows, pos, length):
        """GRE as Zeek reads it: version 0 with IPv4/IPv6, transparent Ethernet bridging or ERSPAN I/II/III
        payloads, version 1 (PPTP) with a PPP-framed IP payload. Returns (rows, payload offset, link).

        A GRE header cut off makes the row TRUNCATED_TRANSPORT (Zeek logs nothing for it); a GRE variant
        Zeek does not unwrap (routing, unknown flags or payload types) leaves the outer row as it is.
        """
        short = ~self.captured(rows, pos, 4) | (length < 4)
        rows, pos, length = self._keep(rows, short, Malformed.TRUNCATED_TRANSPORT, pos, length)
        h = _take(self.buf, pos, 4)
        flags, ptype = _be(h, 0, 2).astype(np.int64), _be(h, 2, 2).astype(np.int64)
        ver = flags & 7
        glen = 4 + 4 * (((flags >> 15) & 1) + ((flags >> 13) & 1) + ((flags >> 12) & 1) + ((flags >> 7) & 1))
        v0 = (ver == 0) & ((flags & 0x4078) == 0)
        link = np.full(len(rows), -1, np.int64)
        skip = glen.copy()
        link[v0 & ((ptype == GRE_IPV4) | (ptype == GRE_IPV6))] = LINKTYPE_RAW
        link[v0 & (ptype == GRE_TEB)] = LINKTYPE_ETHERNET
        erspan = v0 & (ptype == GRE_ERSPAN_1_2)
        link[erspan] = LINKTYPE_ETHERNET
        skip[erspan & ((flags & 0x1000) != 0)] += 8  # type II has an 8-byte ERSPAN header, type I none
        erspan3 = v0 & (ptype == GRE_ERSPAN_3) & self.captured(rows, pos, glen + 12)
        if erspan3.any():
            opt = self.buf[np.where(erspan3, pos + glen + 11, pos)] & 1  # optional 8-byte subheader
            link[erspan3] = LINKTYPE_ETHERNET
            skip[erspan3] += 12 + 8 * opt[erspan3].astype(np.int64)
        pptp = (ver == 1) & ((flags & 0x4078) == 0) & (ptype == GRE_PPTP) & self.captured(rows, pos, glen + 4)
        if pptp.any():  # a 4-byte PPP header (address, control, protocol) precedes the IP packet
            at = np.where(pptp, pos + glen + 2, pos)
            ppp = _take(self.buf, at, 2)
            ppp = _be(ppp, 0, 2).astype(np.int64)
            link[pptp & (ppp == PPP_IPV4)] = LINKTYPE_IPV4
            link[pptp & (ppp == PPP_IPV6)] = LINKTYPE_IPV6
            skip[pptp] += 4
        ok = (link >= 0) & (skip < length)
        return rows[ok], skip[ok], link[ok]

    def _gtp(self, rows, pos, length):
        """GTPv1-U T-PDU (version 1, protocol type GTP, message 0xFF) carrying IPv4/IPv6, as Zeek unwraps it:
        8-byte header, +4 when any of E/S/PN is set, then the extension-header chain."""
        ok = self.captured(rows, pos, 12) & (length >= 12)
        rows, pos, length = rows[ok], pos[ok], length[ok]
        h = _take(self.buf, pos, 12)
        flags = h[:, 0].astype(np.int64)
        ok = ((flags >> 5) == 1) & ((flags & 0x10) != 0) & (h[:, 1] == 0xFF)
        hlen = 8 + np.where(flags & 7, 4, 0)
        nxt = np.where(flags & 4, h[:, 11], 0).astype(np.int64)
        for _ in range(MAX_GTP_EXT_HEADERS):
            more = ok & (nxt != 0)
            if not more.any():
                break
            ok &= ~more | self.captured(rows, pos, hlen + 1)
            more &= ok
            units = self.buf[np.where(more, pos + hlen, pos)].astype(np.int64)
            ok &= ~more | (units > 0)
            more &= ok
            hlen = np.where(more, hlen + 4 * units, hlen)
            ok &= ~more | self.captured(rows, pos, hlen)
            more &= ok
            nxt = np.where(more, self.buf[np.where(more, pos + hlen - 1, pos)], nxt)
        ok &= (nxt == 0) & (hlen < length) & self.captured(rows, pos, hlen + 1)
        nib = self.buf[np.where(ok, pos + hlen, pos)] >> 4
        ok &= (nib == 4) | (nib == 6)  # Zeek: "Invalid IP version in wrapped packet" -> not unwrapped
        return rows[ok], hlen[ok], np.full(int(ok.sum()), LINKTYPE_RAW, np.int64)

    def _vxlan(self, rows, pos, length):
        """VXLAN: 8-byte header with the I (valid VNI) flag, then an Ethernet frame."""
        ok = self.captured(rows, pos, 8) & (length > 8)
        ok[ok] = (self.buf[pos[ok]] & 0x08) != 0
        n = int(ok.sum())
        return rows[ok], np.full(n, 8, np.int64), np.full(n, LINKTYPE_ETHERNET, np.int64)


def _decode(buf: np.ndarray, start: np.ndarray, end: np.ndarray, wire_end: np.ndarray, linktypes: np.ndarray,
            depth: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Decode frames (and, recursively, the tunnels inside them) into columns plus, per output row, the index
    of the input frame it came from (non-decreasing)."""
    n = len(start)
    dec = _Decoder(buf, n, start, end, wire_end)
    rows = dec.link_layer(linktypes)
    rows = dec.encapsulations(rows)
    dec.transport(*dec.ip(rows))
    cols, src = dec.out, np.arange(n)
    found = dec.tunnels() if depth < MAX_TUNNEL_DEPTH else None
    if found is None:
        return cols, src
    outer, istart, iend, iwire, ilink, kind = found
    inner, isrc = _decode(buf, istart, iend, iwire, ilink, depth + 1)
    frame = outer[isrc]
    inner["tunnel"] |= kind[isrc].astype(np.uint8)
    outer_vlan = cols["vlan_id"][frame]
    inner["vlan_id"] = np.where(outer_vlan != 0, outer_vlan, inner["vlan_id"])
    keep = np.ones(n, dtype=bool)
    keep[outer[(kind & UDP_TUNNELS) == 0]] = False  # GRE/IP-in-IP: the inner packet replaces the outer row
    kept = np.flatnonzero(keep)
    src = np.concatenate([kept, frame])
    order = np.argsort(src, kind="stable")  # each inner row right after (or instead of) its frame's row
    return {name: np.concatenate([col[kept], inner[name]])[order] for name, col in cols.items()}, src[order]


def decode_frames(buf: np.ndarray, offsets: np.ndarray, caplens: np.ndarray, wirelens: np.ndarray,
                  ts_ns: np.ndarray, linktypes: np.ndarray | int, link_ids: np.ndarray | int = 0) -> np.ndarray:
    """Decode the frames at ``buf[offsets[i] : offsets[i] + caplens[i]]`` into a batch, one row per frame in
    order, plus one row after its frame for each packet found inside a UDP tunnel (GTP-U, VXLAN).

    ``buf`` is any uint8 array holding the frames (a mapped capture file, a TPACKET_V3 ring block); nothing
    is copied out of it but header bytes. Never raises on frame content: problems land in ``malformed``.
    """
    n = len(offsets)
    out = np.zeros(n, dtype=PACKET_DTYPE)
    if n == 0:
        return out
    buf = np.asarray(buf, dtype=np.uint8).reshape(-1)
    out["ts_ns"] = ts_ns
    out["link_id"] = link_ids
    out["linktype"] = linktypes
    out["caplen"] = caplens
    out["wirelen"] = wirelens
    if len(buf) == 0:
        buf = np.zeros(1, np.uint8)  # every frame is empty; keeps the (guarded) raw-IP peek in range
    # Every gather below is preceded by a check against `end`, so clipping here is what keeps a caller's
    # wrong caplen from reading outside buf.
    start = np.clip(np.asarray(offsets, dtype=np.int64), 0, len(buf))
    end = np.minimum(start + np.asarray(caplens, dtype=np.int64), len(buf))
    wire_end = start + np.asarray(wirelens, dtype=np.int64)
    cols, src = _decode(buf, start, end, wire_end, out["linktype"], 0)
    if len(src) != n:  # UDP tunnels added inner rows: they repeat their frame's capture fields
        out = out[src]
    for name, column in cols.items():
        out[name] = column
    return out
