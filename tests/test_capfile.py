"""Capture-file readers: pcap variants, pcapng blocks and interfaces, gzip, broken records, non-captures."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, PcapWriter

from sensor.capfile import CaptureError, CaptureFile
from sensor.packets import Malformed, addr_to_halves
from sensor.sources import FileSource, open_source
from tests.pcap_craft import PcapNg, Rec, write_pcap

TS = 1_600_000_000_123_456_789
ETH_TCP = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="S"))
ETH_UDP6 = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=53, dport=5353))
RAW_UDP = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / b"abcd")


def read_all(path, batch_size=65536) -> tuple[np.ndarray, FileSource]:
    src = open_source(path, batch_size)
    batches = list(src)
    return (np.concatenate(batches) if batches else np.zeros(0)), src


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, order, nano):
    recs = [Rec(ETH_TCP, TS), Rec(ETH_UDP6, TS + 1_000_000_000)]
    batch, src = read_all(write_pcap(tmp_path / "a.pcap", recs, order=order, nano=nano))
    resolution = 1 if nano else 1000
    assert batch["ts_ns"].tolist() == [TS // resolution * resolution, (TS + 10**9) // resolution * resolution]
    assert batch["ip_version"].tolist() == [4, 6]
    assert batch["dport"].tolist() == [80, 5353]
    assert batch["malformed"].tolist() == [0, 0]
    assert not src.skips


def test_scapy_written_pcap_nano_big_endian(tmp_path):
    path = tmp_path / "scapy.pcap"
    w = PcapWriter(str(path), linktype=1, endianness=">", nano=True)
    pkt = Ether(ETH_TCP)
    pkt.time = 1_600_000_000.5
    w.write(pkt)
    w.close()
    batch, _ = read_all(path)
    assert batch["ts_ns"][0] == 1_600_000_000_500_000_000
    assert batch["sport"][0] == 1234


def test_batches_split_at_batch_size(tmp_path):
    recs = [Rec(ETH_TCP, TS + i) for i in range(10)]
    src = open_source(write_pcap(tmp_path / "a.pcap", recs, nano=True), batch_size=3)
    sizes = [len(b) for b in src]
    assert sizes == [3, 3, 3, 1]


def test_gzip_is_transparent(tmp_path):
    plain = write_pcap(tmp_path / "a.pcap", [Rec(ETH_TCP), Rec(ETH_UDP6)])
    gz = tmp_path / "a.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a, _ = read_all(plain)
    b, src = read_all(gz)
    assert a.tobytes() == b.tobytes() and len(b) == 2


def test_corrupt_gzip_is_a_capture_error(tmp_path):
    gz = tmp_path / "bad.pcap.gz"
    gz.write_bytes(gzip.compress(b"x" * 1000)[:10] + b"\xff" * 40)
    with pytest.raises(CaptureError, match="corrupt gzip"):
        open_source(gz)


def test_cut_off_gzip_yields_what_it_holds(tmp_path):
    noise = np.random.default_rng(33).integers(0, 256, 50 * 1000, dtype=np.uint8).tobytes()
    recs = [Rec(ETH_TCP + noise[i * 1000:(i + 1) * 1000], TS + i) for i in range(50)]
    whole = gzip.compress(write_pcap(tmp_path / "a.pcap", recs).read_bytes())
    gz = tmp_path / "a.pcap.gz"
    gz.write_bytes(whole[: len(whole) // 2])
    batch, src = read_all(gz)
    assert 0 < len(batch) < 50 and (batch["malformed"] == 0).all()
    assert src.skips["cut_off_gzip"] == 1 and src.skips["cut_off_record"] <= 1


def test_pcapng_two_interfaces_with_different_linktypes_and_resolutions(tmp_path):
    ng = (PcapNg().interface(1)  # default resolution: microseconds
          .interface(101, tsresol=9)  # nanoseconds
          .interface(1, tsresol=0x80 | 20, tsoffset=100)  # 2^-20 s, +100 s
          .epb(0, TS // 1000, ETH_TCP)
          .unknown()  # a block type we do not know is skipped
          .epb(1, TS, RAW_UDP)
          .epb(2, 3 << 20 | 1 << 19, ETH_UDP6))  # 3.5 s after the epoch, plus 100 s offset
    batch, src = read_all(ng.write(tmp_path / "a.pcapng"))
    assert batch["link_id"].tolist() == [0, 1, 2]
    assert batch["linktype"].tolist() == [1, 101, 1]
    assert batch["ts_ns"].tolist() == [TS // 1000 * 1000, TS, 103_500_000_000]
    assert batch["proto"].tolist() == [6, 17, 17]
    assert batch["src_lo"][1] == addr_to_halves("192.0.2.1")[1]
    assert batch["malformed"].tolist() == [0, 0, 0]
    assert not src.skips


def test_pcapng_big_endian_sections_and_spb_opb(tmp_path):
    little = PcapNg("<").interface(1, tsresol=6).epb(0, 5, ETH_TCP).bytes()
    big = PcapNg(">").interface(101, snaplen=20).interface(228).spb(RAW_UDP).opb(1, 7_000_000, RAW_UDP).bytes()
    path = tmp_path / "two-sections.pcapng"
    path.write_bytes(little + big)
    batch, src = read_all(path)
    # Interfaces are numbered in file order across sections; a new section restarts interface ids at 0.
    assert batch["link_id"].tolist() == [0, 1, 2]
    assert batch["linktype"].tolist() == [1, 101, 228]
    assert batch["ts_ns"].tolist() == [5000, 0, 7_000_000_000]  # SPBs have no timestamp
    # The SPB keeps only the interface's snaplen (20 bytes: the IPv4 header), so its UDP header is cut off.
    assert batch["caplen"].tolist() == [len(ETH_TCP), 20, len(RAW_UDP)]
    assert batch["malformed"].tolist() == [0, Malformed.TRUNCATED_TRANSPORT, 0]
    assert src.skips == {"truncated_transport": 1}


def test_scapy_written_pcapng(tmp_path):
    path = tmp_path / "scapy.pcapng"
    w = PcapNgWriter(str(path))
    for i, raw in enumerate([ETH_TCP, ETH_UDP6]):
        pkt = Ether(raw)
        pkt.time = 1_700_000_000 + i
        w.write(pkt)
    w.close()
    batch, _ = read_all(path)
    assert batch["ts_ns"].tolist() == [1_700_000_000 * 10**9, 1_700_000_001 * 10**9]
    assert batch["dport"].tolist() == [80, 5353]


def test_pcapng_packet_for_undeclared_interface_is_counted(tmp_path):
    ng = PcapNg().interface(1).epb(0, 1, ETH_TCP).epb(5, 2, ETH_TCP)
    batch, src = read_all(ng.write(tmp_path / "a.pcapng"))
    assert len(batch) == 1
    assert src.skips == {"bad_record:interface": 1}


def test_bad_records_are_counted_not_raised(tmp_path):
    recs = [
        Rec(ETH_TCP),
        Rec(ETH_TCP, wirelen=10),  # orig_len below incl_len: impossible
        Rec(ETH_TCP + b"x" * 100),  # longer than the 64-byte snaplen
        Rec(ETH_UDP6),
    ]
    batch, src = read_all(write_pcap(tmp_path / "a.pcap", recs, snaplen=64 + len(ETH_TCP) - 54))
    assert batch["malformed"].tolist() == [0, Malformed.BAD_RECORD, Malformed.BAD_RECORD, 0]
    assert src.skips == {"bad_record:orig_len": 1, "bad_record:incl_len>snaplen": 1}


def test_cut_off_final_record(tmp_path):
    path = write_pcap(tmp_path / "a.pcap", [Rec(ETH_TCP), Rec(ETH_UDP6)])
    data = path.read_bytes()
    for cut in (1, 10, 17, len(ETH_UDP6) + 15):  # inside the last record's data and inside its header
        path.write_bytes(data[:-cut])
        batch, src = read_all(path)
        assert len(batch) == 1 and batch["malformed"][0] == 0
        assert src.skips == {"cut_off_record": 1}


def test_absurd_incl_len_stops_reading(tmp_path):
    recs = [Rec(ETH_TCP), Rec(ETH_TCP, incl_len=0x7FFFFFFF), Rec(ETH_TCP)]
    batch, src = read_all(write_pcap(tmp_path / "a.pcap", recs))
    assert len(batch) == 1
    assert src.skips == {"bad_record:header": 1}


def test_pcapng_bad_block_length_stops_reading(tmp_path):
    data = bytearray(PcapNg().interface(1).epb(0, 1, ETH_TCP).epb(0, 2, ETH_TCP).bytes())
    last_block = len(data) - (len(ETH_TCP) + 2 + 32)
    data[last_block + 4: last_block + 8] = (13).to_bytes(4, "little")  # not a multiple of 4
    path = tmp_path / "a.pcapng"
    path.write_bytes(bytes(data))
    batch, src = read_all(path)
    assert len(batch) == 1 and src.skips == {"bad_record:header": 1}


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"hello world, this is not a capture file at all", "unknown magic"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "header cut off"),
])
def test_non_captures_raise_one_line_capture_error(tmp_path, content, message):
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=message) as info:
        FileSource(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="cannot read"):
        open_source(tmp_path / "nope.pcap")


def test_chunks_point_into_the_read_block(tmp_path):
    path = write_pcap(tmp_path / "a.pcap", [Rec(ETH_TCP), Rec(RAW_UDP)])
    chunk = next(CaptureFile(path).chunks())
    assert chunk.offsets.tolist() == [40, 40 + len(ETH_TCP) + 16]
    assert chunk.buf[chunk.offsets[1]: chunk.offsets[1] + chunk.caplens[1]].tobytes() == RAW_UDP


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_random_corruption_never_raises_anything_but_capture_error(tmp_path, kind):
    frames = [ETH_TCP, ETH_UDP6, RAW_UDP]
    if kind == "pcap":
        clean = write_pcap(tmp_path / "c.pcap", [Rec(f, TS + i) for i, f in enumerate(frames * 5)]).read_bytes()
    else:
        ng = PcapNg().interface(1).interface(101, tsresol=9)
        for i, f in enumerate(frames * 5):
            ng.epb(int(f is RAW_UDP), TS + i, f)
        clean = ng.spb(ETH_TCP).bytes()
    rng = np.random.default_rng(33)
    path = tmp_path / f"fuzz.{kind}"
    for _ in range(150):
        data = bytearray(clean)
        for at in rng.integers(0, len(data), rng.integers(1, 12)):
            data[at] = rng.integers(0, 256)
        path.write_bytes(bytes(data[: rng.integers(len(data) // 2, len(data) + 1)]))
        try:
            source = open_source(path)
        except CaptureError:
            continue
        rows = sum(len(b) for b in source)
        assert rows <= len(frames) * 5 + 1


def _mixed_records(n: int) -> list[Rec]:
    frames = (ETH_TCP, ETH_UDP6, ETH_TCP + b"p" * 200)
    return [Rec(frames[i % 3], ts_ns=TS // 1000 * 1000 + i * 1000) for i in range(n)]


@pytest.mark.parametrize("kind", ["pcap", "pcap.gz", "pcapng", "pcapng.gz"])
def test_records_split_across_read_blocks_are_carried_over(tmp_path, monkeypatch, kind):
    """Reading in tiny blocks (every record straddles a boundary somewhere) gives the same rows as one read."""
    recs = _mixed_records(300)
    if kind.startswith("pcapng"):
        ng = PcapNg().interface(1)
        for r in recs:
            ng.epb(0, r.ts_ns // 1000, r.data)
        path = ng.write(tmp_path / "a.pcapng")
    else:
        path = write_pcap(tmp_path / "a.pcap", recs)
    if kind.endswith(".gz"):  # two gzip members, as `cat a.gz b.gz` makes
        data = path.read_bytes()
        path = tmp_path / f"a.{kind}"
        path.write_bytes(gzip.compress(data[:5000]) + gzip.compress(data[5000:]))
    whole, _ = read_all(path)
    monkeypatch.setattr("sensor.capfile.READ_BLOCK", 997)
    monkeypatch.setattr("sensor.capfile.GZIP_INPUT", 101)
    pieces, src = read_all(path, batch_size=7)
    assert len(whole) == len(pieces) == 300 and not src.skips
    assert (whole == pieces).all()
    assert pieces["ts_ns"].tolist() == [r.ts_ns for r in recs]


def test_cut_off_record_at_a_block_boundary_is_counted(tmp_path, monkeypatch):
    data = write_pcap(tmp_path / "a.pcap", _mixed_records(40)).read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-10])
    monkeypatch.setattr("sensor.capfile.READ_BLOCK", 512)
    batch, src = read_all(path)
    assert len(batch) == 39 and src.skips == {"cut_off_record": 1}
