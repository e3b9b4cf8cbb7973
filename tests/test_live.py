"""Live capture (AF_PACKET TPACKET_V3 ring) in a network namespace created by the test.

Each test gets a fresh namespace whose only traffic is what the test sends, so packet counts are exact. The
test thread enters the namespace (setns) just long enough to create its sockets: sockets stay in the
namespace they were created in, and a subprocess started from inside inherits it. Skipped only where the
kernel refuses (no permission to create a namespace or an AF_PACKET socket); CI runs as root.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sensor.live import LiveCaptureError, LiveSource
from sensor.packets import IPPROTO_UDP, Malformed, empty_batch, halves_to_addr
from tests.conftest import ROOT

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_ids = itertools.count()
GUARD_S = 20.0  # upper bound on waiting for frames that never come: a hang guard, not a timing assertion
SENDER = ("127.0.0.1", 40000)
# The CLI as its console script runs it (not ``-m sensor.cli``, whose __main__ copy has its own UserError).
NETWARDEN = [sys.executable, "-c", "import sys; from sensor.cli import main; sys.exit(main())"]


@contextlib.contextmanager
def inside(ns: str):
    """Run the block with this thread in network namespace ``ns`` (sockets made here stay there)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            pytest.skip(f"setns into a network namespace refused: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            assert _libc.setns(home, CLONE_NEWNET) == 0
    finally:
        os.close(home)
        os.close(target)


@pytest.fixture
def netns():
    """A fresh network namespace with ``lo`` up; always deleted."""
    name = f"nw-test-{os.getpid()}-{next(_ids)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"kernel refused a network namespace: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        with inside(name):
            try:
                socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
            except PermissionError:
                pytest.skip("no CAP_NET_RAW: AF_PACKET sockets refused")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def udp_endpoints(ports=(9999, 9998), sender=SENDER):
    """Bound receivers (so the stack sends no ICMP port-unreachable back) and a bound sender socket."""
    receivers = []
    for port in ports:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((sender[0] if sender[0].startswith("127.") else "0.0.0.0", port))
        receivers.append(rx)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(sender)
    return receivers, tx


def payload_sizes(n: int) -> list[int]:
    return [1 + (i * 37) % 300 for i in range(n)]


def send(tx: socket.socket, sizes, dst=("127.0.0.1", 9999)) -> None:
    for size in sizes:
        tx.sendto(b"x" * size, dst)


def drain(source: LiveSource) -> np.ndarray:
    """Everything the ring holds right now (stop, then iterate: the iterator hands it over and ends)."""
    source.stop()
    return np.concatenate([empty_batch(), *source])


def small_ring(**kw) -> dict:
    return {"block_size": 1 << 16, "block_count": 8, "block_timeout_ms": 20, **kw}


def test_streams_each_udp_packet_once_with_its_headers(netns):
    sizes = payload_sizes(400)
    with inside(netns):
        source = LiveSource("lo", **small_ring())
        receivers, tx = udp_endpoints()
    t0 = time.time_ns()
    sender = threading.Thread(target=send, args=(tx, sizes))
    with source:
        sender.start()
        batches, seen, deadline = [], 0, time.monotonic() + GUARD_S
        for batch in source:  # streaming: poll, blocks, empty batches; stop once all were seen
            batches.append(batch)
            seen += len(batch)
            if seen >= len(sizes) or time.monotonic() > deadline:
                source.stop()  # what is still in the ring (a doubled frame, say) is handed over too
        sender.join()
        kernel = source.kernel_stats()
    got = np.concatenate(batches)
    t1 = time.time_ns()

    assert len(got) == len(sizes)  # exactly once: PACKET_IGNORE_OUTGOING hides the transmit copy
    assert (got["malformed"] == Malformed.OK).all()
    assert (got["linktype"] == 1).all()  # loopback frames carry an Ethernet header
    assert (got["ip_version"] == 4).all() and (got["proto"] == IPPROTO_UDP).all()
    assert {halves_to_addr(h, lo) for h, lo in zip(got["src_hi"], got["src_lo"])} == {"127.0.0.1"}
    assert {halves_to_addr(h, lo) for h, lo in zip(got["dst_hi"], got["dst_lo"])} == {"127.0.0.1"}
    assert (got["sport"] == SENDER[1]).all() and (got["dport"] == 9999).all()
    assert got["payload_len"].tolist() == sizes  # loopback keeps order
    assert got["ip_len"].tolist() == [s + 28 for s in sizes]
    assert got["wirelen"].tolist() == [s + 42 for s in sizes]
    assert (got["caplen"] == got["wirelen"]).all()
    assert (np.diff(got["ts_ns"]) >= 0).all() and t0 <= got["ts_ns"][0] and got["ts_ns"][-1] <= t1
    assert (kernel.packets, kernel.drops) == (len(sizes), 0)
    for rx in receivers:
        rx.close()
    tx.close()


def test_without_ignore_outgoing_loopback_shows_every_frame_twice(netns):
    sizes = payload_sizes(100)
    with inside(netns):
        source = LiveSource("lo", ignore_outgoing=False, **small_ring())
        receivers, tx = udp_endpoints()
    with source:
        send(tx, sizes)
        got = drain(source)
    assert len(got) == 2 * len(sizes)
    assert sorted(got["payload_len"].tolist()) == sorted(sizes * 2)


def test_bpf_filter_keeps_only_matching_traffic(netns):
    sizes = payload_sizes(150)
    with inside(netns):
        source = LiveSource("lo", bpf_filter="udp port 9999", **small_ring())
        receivers, tx = udp_endpoints()
    with source:
        for size in sizes:
            send(tx, [size], ("127.0.0.1", 9999))
            send(tx, [size], ("127.0.0.1", 9998))
        got = drain(source)
        kernel = source.kernel_stats()
    assert len(got) == len(sizes)
    assert (got["dport"] == 9999).all()
    assert got["payload_len"].tolist() == sizes
    assert kernel.packets == len(sizes)  # filtered frames never reach the ring nor the counters


@pytest.mark.parametrize("bpf_filter", ["", "udp"])
def test_snaplen_truncates_with_and_without_a_filter(netns, bpf_filter):
    with inside(netns):
        source = LiveSource("lo", bpf_filter=bpf_filter, snaplen=64, **small_ring())
        receivers, tx = udp_endpoints()
    with source:
        send(tx, [500, 10])
        got = drain(source)
    assert got["caplen"].tolist() == [64, 52]
    assert got["wirelen"].tolist() == [542, 52]
    assert got["payload_len"].tolist() == [500, 10]  # from the IP lengths, not the capture
    assert (got["malformed"] == Malformed.OK).all()


def test_invalid_filter_is_a_one_line_error_naming_it(netns):
    with inside(netns):
        with pytest.raises(LiveCaptureError, match=r"invalid BPF filter 'udp prot 9999'") as info:
            LiveSource("lo", bpf_filter="udp prot 9999", **small_ring())
    assert "\n" not in str(info.value)


def test_unknown_interface_and_bad_block_size_are_one_line_errors(netns):
    with inside(netns):
        with pytest.raises(LiveCaptureError, match="no such network interface: 'nw-none0'"):
            LiveSource("nw-none0")
        with pytest.raises(LiveCaptureError, match="not a multiple of the page size"):
            LiveSource("lo", block_size=5000)


def test_full_ring_drops_are_counted_by_the_kernel(netns):
    sizes = payload_sizes(1000)
    with inside(netns):
        source = LiveSource("lo", block_size=4096, block_count=2, block_timeout_ms=20)
        receivers, tx = udp_endpoints()
    with source:
        send(tx, sizes)  # nobody reads: two 4 KiB blocks hold a few dozen frames
        got = drain(source)
        kernel = source.kernel_stats()
    assert kernel.packets == len(sizes)
    assert kernel.drops > 0 and kernel.freeze_q_cnt > 0
    assert len(got) + kernel.drops == len(sizes)
    assert got["payload_len"].tolist() == sizes[: len(got)]  # the first frames, in order, then the drops


def test_vlan_tag_stripped_by_the_kernel_is_restored(netns):
    """The receive path moves the outermost 802.1Q/802.1ad tag out of the frame (TP_STATUS_VLAN_VALID)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    udp = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1234, dport=5678) / (b"v" * 20)
    frames = [Ether(type=0x8100) / Dot1Q(vlan=42) / udp,
              Ether(type=0x88A8) / Dot1AD(vlan=100) / Dot1Q(vlan=42) / udp,  # QinQ: the outer id is kept
              Ether() / udp]
    with inside(netns):
        source = LiveSource("lo", **small_ring())
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.bind(("lo", 0))
    with source, tx:
        for frame in frames:
            tx.send(bytes(frame))
        got = drain(source)
    assert got["vlan_id"].tolist() == [42, 100, 0]
    assert (got["dport"] == 5678).all() and (got["payload_len"] == 20).all()
    assert (got["malformed"] == Malformed.OK).all()


def test_tun_interface_is_captured_as_raw_ip(netns):
    """ARPHRD_NONE (tun) frames start at the IP header: link type 101."""
    from scapy.layers.inet import IP, UDP

    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun in this environment")
    with inside(netns):
        tun = os.open("/dev/net/tun", os.O_RDWR)
        # TUNSETIFF with IFF_TUN | IFF_NO_PI: a layer-3 device whose fd writes arrive as received packets
        fcntl.ioctl(tun, 0x400454CA, struct.pack("16sH22x", b"nwtun0", 0x0001 | 0x1000))
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "nwtun0", "up"], check=True)
        with inside(netns):
            source = LiveSource("nwtun0", bpf_filter="udp", **small_ring())
        packet = IP(src="10.1.0.1", dst="10.1.0.2") / UDP(sport=7, dport=9)
        with source:
            for size in (5, 50):
                os.write(tun, bytes(packet / (b"t" * size)))
            got = drain(source)
    finally:
        os.close(tun)
    assert source.linktype == 101
    assert got["linktype"].tolist() == [101, 101]
    assert got["payload_len"].tolist() == [5, 50] and (got["dport"] == 9).all()
    assert got["wirelen"].tolist() == [33, 78]


@pytest.mark.parametrize("promiscuous", [True, False])
def test_promiscuous_mode_lasts_as_long_as_the_capture(netns, promiscuous):
    def promiscuity() -> int:  # the kernel's promiscuous-mode reference count of lo
        shown = subprocess.run(["ip", "-d", "-n", netns, "link", "show", "lo"], capture_output=True,
                               text=True, check=True)
        return int(shown.stdout.split("promiscuity ", 1)[1].split()[0])

    with inside(netns):
        source = LiveSource("lo", promiscuous=promiscuous, **small_ring())
    with source:
        assert promiscuity() == int(promiscuous)
    assert promiscuity() == 0


def _wait_for_line(stream, needle: str) -> str:
    """Read stderr lines until one contains ``needle`` (bounded by GUARD_S)."""
    deadline = time.monotonic() + GUARD_S
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            line = stream.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
    pytest.fail(f"no {needle!r} on stderr; got: {''.join(seen)}")


def test_cli_capture_stops_cleanly_on_sigterm(netns):
    sizes = payload_sizes(120)
    cmd = NETWARDEN + ["capture", "--interface", "lo", "--filter", "udp port 9999"]
    with inside(netns):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        receivers, tx = udp_endpoints()
    try:
        _wait_for_line(proc.stderr, "capture started")
        send(tx, sizes)
        send(tx, [10] * 30, ("127.0.0.1", 9998))  # filtered out
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["interface"] == "lo"
    assert summary["packets"] == len(sizes)
    assert summary["kernel"] == {"received": len(sizes), "dropped": 0, "ring_full_events": 0}


def test_cli_capture_without_cap_net_raw_is_a_one_line_error():
    if not os.path.exists("/usr/bin/setpriv"):
        pytest.skip("setpriv (util-linux) not installed: cannot drop CAP_NET_RAW for the test")
    cmd = ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw",
           *NETWARDEN, "capture", "--interface", "lo", "--count", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "netwarden: error: live capture on lo needs CAP_NET_RAW (run as root, or grant it, e.g. systemd "
        "AmbientCapabilities=CAP_NET_RAW)"
    ]
