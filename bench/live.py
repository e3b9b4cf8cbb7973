"""Live-capture benchmark: the highest packet rate ``LiveSource`` captures with zero kernel drops.

Runs entirely inside a network namespace it creates (loopback only, deleted at the end), as root. For each
target rate, a sender process pushes pre-built Ethernet/IPv4/UDP frames (64 flows, 60-600 bytes) through a
PACKET_TX_RING on ``lo``: frames are written into the ring once, and each burst only flips the slots' status
words and makes one ``send()`` call, so the sender costs no per-packet Python and can outrun the capture.
Frames carry a foreign destination MAC, so the IP stack drops them right after the capture tap sees them.

The capture side is the real one: ``LiveSource`` with the config's default ring, decoding every block into
a packet batch. Per step it prints the achieved send rate, packets/s captured, kernel drops and the capture
process's CPU share. Bounded: each step sends a fixed count within a fixed time; escalation stops after the
first step with drops. Two shared cores here: treat figures as provisional.

    .venv/bin/python bench/live.py [--quick] [--seconds S] [--rates 100000,250000,...]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import mmap
import multiprocessing as mp
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sensor.config import defaults  # noqa: E402
from sensor.live import SOL_PACKET, LiveSource  # noqa: E402

CLONE_NEWNET = 0x40000000
PACKET_VERSION, PACKET_TX_RING, TPACKET_V2 = 10, 13, 1
TP_STATUS_SEND_REQUEST = 1
TX_FRAME, TX_BLOCK, TX_BLOCKS = 2048, 1 << 16, 64  # 2048 slots
TX_DATA = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where frame bytes start in a TX slot
BURST = 256
ETH_HEADER = bytes.fromhex("020000000001" "020000000002" "0800")  # foreign unicast dst, IPv4
DEFAULT_RATES = (50_000, 100_000, 200_000, 250_000, 300_000, 400_000, 600_000, 0)  # 0 = unthrottled


def build_frames(n_flows: int = 64) -> list[bytes]:
    """Ethernet/IPv4/UDP frames with a foreign destination MAC (dropped by IP after the tap)."""
    frames = []
    for i in range(n_flows):
        payload = b"p" * (18 + (i * 97) % 540)
        udp = struct.pack("!HHHH", 20000 + i, 9999, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2 + i % 200]))
        frames.append(ETH_HEADER + ip + udp)
    return frames


def sender(conn, rate: int, count: int, seconds: float) -> None:
    """Send ``count`` frames at ``rate``/s (0: flat out) within ``seconds``; report (sent, wall time)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    slots = TX_BLOCK // TX_FRAME * TX_BLOCKS
    sock.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack("4I", TX_BLOCK, TX_BLOCKS, TX_FRAME, slots))
    ring = mmap.mmap(sock.fileno(), TX_BLOCK * TX_BLOCKS, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sock.bind(("lo", 0))
    frames = build_frames()
    for i in range(slots):
        frame = frames[i % len(frames)]
        struct.pack_into("I", ring, i * TX_FRAME + 4, len(frame))  # tp_len
        ring[i * TX_FRAME + TX_DATA: i * TX_FRAME + TX_DATA + len(frame)] = frame
    status = np.frombuffer(ring, dtype="<u4")[:: TX_FRAME // 4]  # tp_status of every slot
    conn.recv()  # "go": the capture is ready
    sent, cursor = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while sent < count and time.perf_counter() < deadline:
        burst = min(BURST, count - sent, slots - cursor)
        status[cursor: cursor + burst] = TP_STATUS_SEND_REQUEST
        sock.send(b"")  # transmits every pending slot; blocks until they are sent
        sent += burst
        cursor = (cursor + burst) % slots
        if rate:
            ahead = start + sent / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    conn.send((sent, time.perf_counter() - start))
    del status
    ring.close()
    sock.close()


def run_step(rate: int, seconds: float, ring: dict) -> dict:
    count = int(rate * seconds) if rate else 10_000_000
    parent, child = mp.Pipe()
    proc = mp.Process(target=sender, args=(child, rate, count, seconds * 1.5))
    proc.start()  # before the capture socket exists, so the sender does not inherit it
    captured = 0
    with LiveSource("lo", **ring) as source:
        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        parent.send("go")
        for batch in source:
            captured += len(batch)
            if not proc.is_alive():
                source.stop()  # hand over what the ring holds, then end
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        kernel = source.kernel_stats()
    sent, send_wall = parent.recv()
    proc.join()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"target": rate, "sent": sent, "send_pps": sent / send_wall, "captured": captured,
            "capture_pps": captured / send_wall, "drops": kernel.drops, "cpu_pct": 100 * cpu / wall}


@contextlib.contextmanager
def namespace():
    """Move this process into a fresh network namespace with ``lo`` up; delete it afterwards."""
    name = f"nw-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="send time per step (default 2)")
    parser.add_argument("--rates", help="comma-separated target rates in pkts/s (0 = unthrottled)")
    parser.add_argument("--quick", action="store_true", help="1 s steps at 100k, 250k and unthrottled")
    args = parser.parse_args()
    rates = DEFAULT_RATES
    if args.rates:
        rates = tuple(int(r) for r in args.rates.split(","))
    elif args.quick:
        rates, args.seconds = (100_000, 250_000, 0), 1.0
    if os.geteuid() != 0:
        print("bench/live.py needs root (network namespace, AF_PACKET)", file=sys.stderr)
        return 1
    ring = defaults().section("capture")
    del ring["interface"]
    ring["bpf_filter"] = ""
    print(f"ring: {ring['block_count']} x {ring['block_size']} bytes, "
          f"block timeout {ring['block_timeout_ms']} ms; {args.seconds:g} s per step")
    print(f"{'target':>9} {'sent/s':>9} {'captured/s':>11} {'sent':>9} {'captured':>9} {'drops':>7} "
          f"{'cpu%':>5}")
    best = 0.0
    with namespace():
        for rate in rates:
            r = run_step(rate, args.seconds, ring)
            target = f"{rate:,}" if rate else "max"
            print(f"{target:>9} {r['send_pps']:>9,.0f} {r['capture_pps']:>11,.0f} {r['sent']:>9,} "
                  f"{r['captured']:>9,} {r['drops']:>7,} {r['cpu_pct']:>5.0f}", flush=True)
            if r["drops"] or r["captured"] != r["sent"]:
                break
            best = max(best, r["capture_pps"])
        else:
            if not rates[-1]:
                print("no drops even with the sender flat out: the sender, not the capture, set the ceiling")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verdict = "met" if best >= 250_000 else "NOT met"
    print(f"highest lossless rate: {best:,.0f} pkts/s (target 250,000: {verdict}); "
          f"capture peak RSS {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
