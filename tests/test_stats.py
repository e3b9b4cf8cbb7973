"""CaptureStats and ``netwarden stats``: counts, time span, skips, JSON output, errors, import weight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from sensor.cli import main
from sensor.sources import open_source
from sensor.stats import CaptureStats
from tests.pcap_craft import PcapNg, Rec, write_pcap

T0 = 1_700_000_000_000_000_000
FRAMES = [
    bytes(Ether() / IP() / TCP()),
    bytes(Ether() / IP() / TCP()),
    bytes(Ether() / IP() / UDP()),
    bytes(Ether() / IP() / ICMP()),
    bytes(Ether() / IPv6() / UDP()),
    bytes(Ether() / IP(proto=47) / b"gre-payload"),
    bytes(Ether() / ARP()),
    bytes(Ether() / IP() / TCP())[:40],  # TCP header cut off
]


def crafted(tmp_path):
    recs = [Rec(f, T0 + i * 500_000_000, wirelen=max(len(f), 60)) for i, f in enumerate(FRAMES)]
    return write_pcap(tmp_path / "mix.pcap", recs, nano=True)


def summary(path) -> dict:
    stats = CaptureStats()
    source = open_source(path)
    for batch in source:
        stats.update(batch)
    stats.add_skips(source.skips)
    return stats.to_dict()


def test_counts_and_time_span(tmp_path):
    d = summary(crafted(tmp_path))
    assert d["packets"] == 8
    assert d["linktypes"] == {"ethernet": 8}
    assert d["network"] == {"ipv4": 6, "ipv6": 1, "arp": 1}
    assert d["transport"] == {"tcp": 3, "udp": 2, "icmp": 1, "47": 1}
    assert d["skipped"] == {"truncated_transport": 1} and d["skipped_total"] == 1
    assert d["bytes"] == sum(max(len(f), 60) for f in FRAMES)
    assert d["first_ts"] == "2023-11-14T22:13:20Z" and d["first_epoch"] == 1_700_000_000.0
    assert d["duration_s"] == 3.5 and d["pps"] == round(8 / 3.5, 3)


def test_unknown_link_types_are_counted_by_name_and_skip(tmp_path):
    ng = PcapNg().interface(119).interface(1).epb(0, 1, b"\0" * 30).epb(1, 2, FRAMES[0])
    d = summary(ng.write(tmp_path / "a.pcapng"))
    assert d["linktypes"] == {"ethernet": 1, "prism": 1}
    assert d["skipped"] == {"unknown_linktype:119": 1}
    assert d["network"] == {"ipv4": 1, "other": 1}


def test_merge_is_the_sum(tmp_path):
    path = crafted(tmp_path)
    a, b = CaptureStats(), CaptureStats()
    for batch in open_source(path):
        a.update(batch)
        b.update(batch[:3])
    b.merge(a)
    assert b.packets == 11 and b.network["ipv4"] == 9 and b.first_ns == T0


def test_empty_stats_are_well_formed():
    d = CaptureStats().to_dict()
    assert d["packets"] == 0 and d["first_ts"] is None and d["pps"] is None


def test_cli_prints_json_per_input_and_total(tmp_path, capsys):
    path = crafted(tmp_path)
    assert main(["stats", str(path), str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [i["input"] for i in out["inputs"]] == [str(path)] * 2
    assert out["inputs"][0]["format"] == "pcap"
    assert out["total"]["packets"] == 16 and out["total"]["skipped"] == {"truncated_transport": 2}


def test_cli_output_file(tmp_path, capsys):
    out_file = tmp_path / "stats.json"
    assert main(["stats", str(crafted(tmp_path)), "-o", str(out_file)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out_file.read_text())["total"]["packets"] == 8
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_non_capture_is_one_line_exit_1(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("definitely not a capture\n")
    netwarden = Path(sys.executable).parent / "netwarden"  # the console script, as operators run it
    proc = subprocess.run([str(netwarden), "stats", str(bogus)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not a pcap or pcapng capture" in proc.stderr


def test_stats_command_imports_no_ml_frameworks(tmp_path):
    path = crafted(tmp_path)
    code = (
        "import sys; from sensor.cli import main; rc = main(['stats', sys.argv[1], '-o', sys.argv[2]]);"
        "heavy = [m for m in ('tensorflow', 'torch', 'sklearn', 'keras') if m in sys.modules];"
        "print(rc, heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "o.json")],
                          capture_output=True, text=True)
    assert proc.stdout.strip() == "0 []", proc.stderr
    assert json.loads((tmp_path / "o.json").read_text())["total"]["packets"] == 8


def test_stats_on_real_capture_matches_batches(data_dir):
    path = data_dir / "ndpi" / "pcap" / "dns_fragmented.pcap"
    batch = np.concatenate(list(open_source(path)))
    d = summary(path)
    assert d["packets"] == len(batch)
    assert d["network"].get("ipv6", 0) == int((batch["ip_version"] == 6).sum())
    assert sum(d["transport"].values()) <= d["packets"]
