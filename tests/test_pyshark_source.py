"""TsharkSource: frames read through tshark (pyshark) decode to exactly FileSource's rows for the same frames.

Real captures from shared data are read both ways; formats netwarden cannot read itself (snoop, NetMon 2,
ERF) are made from a real pcap with Wireshark's editcap (or, for ERF, which editcap cannot write from
Ethernet, by wrapping the pcap's records in ERF headers) and must decode to the pcap's rows.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scapy.utils import RawPcapReader

from sensor.cli import main
from sensor.pyshark_source import TsharkSource, tshark_available
from sensor.sources import CaptureError, FileSource

TOOLS_MISSING = not (tshark_available() and shutil.which("editcap") and shutil.which("mergecap"))
pytestmark = pytest.mark.skipif(TOOLS_MISSING, reason="tshark/editcap/mergecap not installed")

WIKIPEDIA = "zeek/traces/wikipedia.pcap"  # Ethernet, IPv4 + IPv6 + ARP, 136 frames
REAL_CAPTURES = [
    WIKIPEDIA,
    "zeek/traces/pcapng-multi-interface.pcapng",  # pcapng, two interfaces
    "zeek/traces/mixed-vlan-mpls.pcap",  # VLAN, MPLS encapsulations
    "ndpi/pcap/http2.pcapng",  # Linux SLL in pcapng
    "ndpi/pcap/openvpn-tlscrypt.pcap",  # BSD null
    "ndpi/pcap/iqiyi.pcap",  # raw IP
    "ndpi/pcap/BGP_redist.pcap",  # Cisco HDLC
    "ndpi/pcap/someip_sd_sample.pcap",  # nanosecond pcap, PPI link type: unknown_linktype:192 skips
    "ndpi/pcap/fuzz-2006-06-26-2594.pcap",  # fuzzed: truncated and bad-length IP headers
]


def rows(source) -> np.ndarray:
    batches = list(source)
    return np.concatenate(batches) if batches else np.zeros(0)


def assert_same_rows(expected: np.ndarray, got: np.ndarray) -> None:
    assert len(got) == len(expected) > 0
    for name in expected.dtype.names:  # column by column, so a failure names the column
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("rel", REAL_CAPTURES)
def test_real_captures_batch_for_batch_equal_to_file_source(data_dir, rel):
    path = data_dir / rel
    file_src, tshark_src = FileSource(path, batch_size=64), TsharkSource(path, batch_size=64)
    expected, got = list(file_src), list(tshark_src)
    assert [len(b) for b in got] == [len(b) for b in expected]
    for want, have in zip(expected, got):
        assert_same_rows(want, have)
    assert tshark_src.skips == file_src.skips
    assert tshark_src.format.endswith(file_src.format)  # captype says "nsecpcap" for nanosecond pcap


def test_pcapng_with_three_link_types(data_dir, tmp_path):
    """mergecap -a gives one pcapng with an interface per input: Ethernet, Linux SLL and BSD null."""
    inputs = [data_dir / WIKIPEDIA, data_dir / "ndpi/pcap/rtcp_multiple_pkts_in_the_same_datagram.pcap",
              data_dir / "ndpi/pcap/openvpn-tlscrypt.pcap"]
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-a", "-w", str(merged), *map(str, inputs)], check=True,
                   capture_output=True)
    got = rows(TsharkSource(merged))
    assert_same_rows(rows(FileSource(merged)), got)
    assert sorted(set(zip(got["link_id"].tolist(), got["linktype"].tolist()))) == [(0, 1), (1, 113), (2, 0)]


@pytest.mark.parametrize("fmt", ["snoop", "netmon2"])
def test_editcap_formats_decode_to_the_pcap_rows(data_dir, tmp_path, fmt):
    original = data_dir / WIKIPEDIA
    converted = tmp_path / f"wikipedia.{fmt}"
    subprocess.run(["editcap", "-F", fmt, str(original), str(converted)], check=True, capture_output=True)
    with pytest.raises(CaptureError):
        FileSource(converted)  # the point of TsharkSource: our reader does not know this format
    source = TsharkSource(converted)
    assert source.format == fmt
    assert_same_rows(rows(FileSource(original)), rows(source))
    assert not source.skips


def write_erf(pcap: Path, out: Path) -> None:
    """Endace ERF: one TYPE_ETH record per frame (16-byte header, 2-byte offset/pad, Ethernet frame)."""
    with out.open("wb") as fh:
        for data, meta in RawPcapReader(str(pcap)):
            frac = -((-meta.usec << 32) // 1_000_000)  # 32.32 fixed point, rounded up so ns come back exact
            header = struct.pack("<Q", (meta.sec << 32) | frac)
            # type ETH, flags, rlen, lctr, wlen
            header += struct.pack(">BBHHH", 2, 0, 18 + len(data), 0, meta.wirelen)
            fh.write(header + b"\0\0" + data)


def test_erf_decodes_to_the_pcap_rows(data_dir, tmp_path):
    original, erf = data_dir / WIKIPEDIA, tmp_path / "wikipedia.erf"
    write_erf(original, erf)
    source = TsharkSource(erf, batch_size=50)
    assert source.format == "erf"
    assert_same_rows(rows(FileSource(original)), rows(source))


def test_cut_off_file_keeps_complete_records_and_counts_it(data_dir, tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((data_dir / WIKIPEDIA).read_bytes()[:5000])
    file_src, tshark_src = FileSource(cut), TsharkSource(cut)
    assert_same_rows(rows(file_src), rows(tshark_src))
    assert tshark_src.skips == file_src.skips == {"cut_off_record": 1}


def test_not_a_capture_is_a_one_line_capture_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a packet capture\n")
    for path in (text, tmp_path / "missing.pcap"):
        with pytest.raises(CaptureError) as err:
            TsharkSource(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_stats_via_tshark_reads_snoop(data_dir, tmp_path, capsys):
    original, snoop = data_dir / WIKIPEDIA, tmp_path / "w.snoop"
    subprocess.run(["editcap", "-F", "snoop", str(original), str(snoop)], check=True, capture_output=True)
    assert main(["stats", str(original)]) == 0
    direct = json.loads(capsys.readouterr().out)["inputs"][0]
    assert main(["stats", "--via-tshark", str(snoop)]) == 0
    via = json.loads(capsys.readouterr().out)["inputs"][0]
    assert via["format"] == "snoop" and via["packets"] == 136
    for key in ("input", "format"):
        del direct[key], via[key]
    assert via == direct
