"""Synthetic but protocol-correct traffic for ``make demo`` and the end-to-end tests.

The demo must run on a fresh machine without the shared data set, so it builds its captures with scapy:
a *baseline* of ordinary office traffic (HTTP and HTTPS sessions with proper handshakes and closes, DNS
lookups, SSH, pings) and a *mixed* capture of the same kind of traffic with attacks laid over it (a SYN port
scan answered by RSTs, a spoofed SYN flood, a UDP probe sweep). Deterministic for a given seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

CLIENTS = [f"10.1.0.{i}" for i in range(10, 40)]
WEB_SERVERS = ["93.184.216.34", "151.101.1.69", "104.16.132.229"]
DNS_SERVER = "10.1.0.2"
SSH_SERVER = "10.1.0.5"
ATTACKER = "198.51.100.66"
VICTIM = "10.1.0.80"


class _Builder:
    """Accumulates packets with timestamps; helpers emit whole, well-formed conversations."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.packets: list[Packet] = []

    def _emit(self, pkt: Packet, ts: float) -> None:
        frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
        frame.time = ts
        self.packets.append(frame)

    def tcp_session(self, t: float, client: str, server: str, dport: int, request: int, response: int) -> None:
        sport = self.rng.randint(32768, 60999)
        cseq, sseq = self.rng.getrandbits(32), self.rng.getrandbits(32)
        rtt = self.rng.uniform(0.005, 0.05)
        c = IP(src=client, dst=server, ttl=64)
        s = IP(src=server, dst=client, ttl=56)
        self._emit(c / TCP(sport=sport, dport=dport, flags="S", seq=cseq), t)
        self._emit(s / TCP(sport=dport, dport=sport, flags="SA", seq=sseq, ack=cseq + 1), t + rtt)
        self._emit(c / TCP(sport=sport, dport=dport, flags="A", seq=cseq + 1, ack=sseq + 1), t + rtt * 1.1)
        self._emit(c / TCP(sport=sport, dport=dport, flags="PA", seq=cseq + 1, ack=sseq + 1) / Raw(b"q" * request),
                   t + rtt * 1.2)
        sent, now = 0, t + rtt * 2.2
        while sent < response:
            chunk = min(1448, response - sent)
            self._emit(s / TCP(sport=dport, dport=sport, flags="PA", seq=sseq + 1 + sent, ack=cseq + 1 + request)
                       / Raw(b"r" * chunk), now)
            sent += chunk
            now += 0.0005
        self._emit(c / TCP(sport=sport, dport=dport, flags="A", seq=cseq + 1 + request, ack=sseq + 1 + sent),
                   now + rtt)
        self._emit(c / TCP(sport=sport, dport=dport, flags="FA", seq=cseq + 1 + request, ack=sseq + 1 + sent),
                   now + rtt * 1.5)
        self._emit(s / TCP(sport=dport, dport=sport, flags="FA", seq=sseq + 1 + sent, ack=cseq + 2 + request),
                   now + rtt * 2.5)
        self._emit(c / TCP(sport=sport, dport=dport, flags="A", seq=cseq + 2 + request, ack=sseq + 2 + sent),
                   now + rtt * 3.5)

    def dns_lookup(self, t: float, client: str) -> None:
        sport = self.rng.randint(32768, 60999)
        name = f"host{self.rng.randint(1, 50)}.example.com"
        qid = self.rng.getrandbits(16)
        self._emit(IP(src=client, dst=DNS_SERVER) / UDP(sport=sport, dport=53)
                   / DNS(id=qid, rd=1, qd=DNSQR(qname=name)), t)
        self._emit(IP(src=DNS_SERVER, dst=client) / UDP(sport=53, dport=sport)
                   / DNS(id=qid, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="93.184.216.34")),
                   t + self.rng.uniform(0.001, 0.02))

    def ping(self, t: float, client: str, server: str) -> None:
        ident = self.rng.getrandbits(16)
        self._emit(IP(src=client, dst=server) / ICMP(type=8, id=ident, seq=1) / Raw(b"x" * 56), t)
        self._emit(IP(src=server, dst=client) / ICMP(type=0, id=ident, seq=1) / Raw(b"x" * 56), t + 0.01)

    def normal_traffic(self, start: float, seconds: float, sessions: int) -> None:
        for _ in range(sessions):
            t = start + self.rng.uniform(0, seconds)
            client = self.rng.choice(CLIENTS)
            kind = self.rng.random()
            if kind < 0.45:
                self.dns_lookup(t, client)
                self.tcp_session(t + 0.03, client, self.rng.choice(WEB_SERVERS), self.rng.choice([80, 443]),
                                 self.rng.randint(200, 700), self.rng.randint(500, 12000))
            elif kind < 0.75:
                self.dns_lookup(t, client)
            elif kind < 0.92:
                self.tcp_session(t, client, SSH_SERVER, 22, self.rng.randint(500, 3000),
                                 self.rng.randint(500, 6000))
            else:
                self.ping(t, client, self.rng.choice(WEB_SERVERS + [DNS_SERVER]))

    def port_scan(self, start: float, ports: range) -> None:
        for i, port in enumerate(ports):
            t = start + i * 0.002
            sport = self.rng.randint(40000, 60000)
            self._emit(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=sport, dport=port, flags="S", seq=1000), t)
            self._emit(IP(src=VICTIM, dst=ATTACKER) / TCP(sport=port, dport=sport, flags="RA", ack=1001), t + 0.0004)

    def syn_flood(self, start: float, count: int) -> None:
        for i in range(count):
            src = f"203.0.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
            self._emit(IP(src=src, dst=VICTIM) / TCP(sport=self.rng.randint(1024, 65535), dport=80, flags="S",
                                                      seq=self.rng.getrandbits(32)), start + i * 0.001)

    def udp_sweep(self, start: float, hosts: int) -> None:
        for i in range(hosts):
            self._emit(IP(src=ATTACKER, dst=f"10.1.2.{i + 1}") / UDP(sport=53535, dport=161) / Raw(b"\x30\x26"),
                       start + i * 0.003)

    def sorted_packets(self) -> list[Packet]:
        return sorted(self.packets, key=lambda p: float(p.time))


def write_demo_captures(out_dir: Path, seed: int = 7) -> tuple[Path, Path]:
    """Write ``baseline.pcap`` (normal only) and ``mixed.pcap`` (normal + attacks); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    baseline = _Builder(random.Random(seed))
    baseline.normal_traffic(t0, 1800.0, 1500)
    mixed = _Builder(random.Random(seed + 1))
    mixed.normal_traffic(t0 + 3600, 600.0, 400)
    mixed.port_scan(t0 + 3700, range(1, 1025))
    mixed.syn_flood(t0 + 3900, 600)
    mixed.udp_sweep(t0 + 4100, 120)
    paths = out_dir / "baseline.pcap", out_dir / "mixed.pcap"
    for path, builder in zip(paths, (baseline, mixed)):
        wrpcap(str(path), builder.sorted_packets())
    return paths
