"""KDD service names: which KDD'99 ``service`` a connection has, from its protocol, ports or ICMP type/code.

KDD's ``service`` is the network service on the destination, named from a fixed vocabulary
(``features.schema.SERVICE_VALUES``). The datasets were labelled from the ports (no payload analysis), so
the mapping here is by port and ICMP type, never by Zeek's application-protocol ``service`` column.

Rules, in order (the reasons are in docs/features.md):

1. TCP: source port 20 is ``ftp_data`` (active FTP: the server opens the data connection *from* port 20 to
   an ephemeral client port, so the destination port says nothing); otherwise the destination port is
   looked up in ``TCP_PORTS``.
2. UDP: only three UDP services exist in KDD: ``domain_u`` 53, ``tftp_u`` 69, ``ntp_u`` 123. Every other
   UDP port (NetBIOS, SNMP, syslog ...) falls through to rule 4, as in the datasets (NSL-KDD labels its
   SNMP attacks, snmpguess and snmpgetattack on UDP 161, as ``private``).
3. ICMP (and ICMPv6, which Zeek also logs as ``icmp``): Zeek puts the ICMP type in ``orig_p`` and the code
   (or, for request/reply pairs, the reply type) in ``resp_p``; the type/code pair is looked up in
   ``ICMP_TYPES`` / ``ICMPV6_TYPES``; anything else is ``oth_i``.
4. Unnamed TCP/UDP ports: ``private`` below 1024 (the privileged ports), ``other`` from 1024 up. This is
   what the datasets show (neptune's SYN floods over ports 1-1023 are ``private`` except where the port has
   a name; satan's probes of high ports are ``other``); it differs from the common C++ extractor, which
   calls only the IANA dynamic range (49152+) ``private``.
5. Any other IP protocol (GRE, ESP, SCTP ...): ``other``.

``harvest`` and ``pm_dump`` are in the vocabulary but have no documented port: nothing maps to them.
``icmp`` is the C++ extractor's ICMP catch-all and is never produced here (``oth_i`` is KDD's name).
"""

from __future__ import annotations

import functools

# TCP destination port -> KDD service. Ports are IANA's (RFC 1700 era) assignments for each KDD name; where
# a service is commonly run on a range or a TLS twin port, those ports are listed too and marked so.
TCP_PORTS: dict[int, str] = {
    7: "echo",
    9: "discard",
    11: "systat",
    13: "daytime",
    15: "netstat",
    20: "ftp_data",
    21: "ftp",
    22: "ssh",
    23: "telnet",
    25: "smtp",
    37: "time",
    42: "name",  # host name server (nameserver)
    43: "whois",
    53: "domain",  # DNS over TCP (zone transfers, large answers)
    57: "mtp",
    70: "gopher",
    71: "remote_job",  # netrjs-1
    77: "rje",
    79: "finger",
    80: "http",
    84: "ctf",  # common trace facility
    87: "link",  # /etc/services' link (ttylink)
    95: "supdup",
    101: "hostnames",  # NIC host name server
    102: "iso_tsap",
    105: "csnet_ns",  # CSNET mailbox name server
    109: "pop_2",
    110: "pop_3",
    111: "sunrpc",
    113: "auth",  # ident
    117: "uucp_path",
    119: "nntp",
    137: "netbios_ns",
    138: "netbios_dgm",
    139: "netbios_ssn",
    143: "imap4",
    150: "sql_net",
    175: "vmnet",
    179: "bgp",
    194: "IRC",
    210: "Z39_50",
    389: "ldap",
    433: "nnsp",
    443: "http_443",
    512: "exec",
    513: "login",
    514: "shell",
    515: "printer",
    520: "efs",  # extended file name server (TCP 520; UDP 520 is RIP)
    530: "courier",
    540: "uucp",
    543: "klogin",
    544: "kshell",
    2784: "http_2784",  # www-dev
    5190: "aol",
    8001: "http_8001",
    **{p: "IRC" for p in range(6665, 6670)},  # ircd's customary ports
    **{p: "X11" for p in range(6000, 6064)},  # X display :0 .. :63
}

UDP_PORTS: dict[int, str] = {53: "domain_u", 69: "tftp_u", 123: "ntp_u"}

# ICMPv4 (type, code-or-reply-type) -> service; ``None`` matches any second value.
ICMP_TYPES: dict[tuple[int, int | None], str] = {
    (0, None): "ecr_i",  # echo reply
    (8, None): "eco_i",  # echo request
    (3, 3): "urp_i",  # destination unreachable: port
    (3, 1): "urh_i",  # destination unreachable: host
    (5, None): "red_i",  # redirect
    (11, None): "tim_i",  # time exceeded
}
# ICMPv6 equivalents (RFC 4443 / 4861).
ICMPV6_TYPES: dict[tuple[int, int | None], str] = {
    (129, None): "ecr_i",
    (128, None): "eco_i",
    (1, 4): "urp_i",  # destination unreachable: port
    (1, 3): "urh_i",  # destination unreachable: address
    (137, None): "red_i",
    (3, None): "tim_i",
}

PRIVILEGED_PORT_LIMIT = 1024


def _unnamed_port(port: int) -> str:
    return "private" if port < PRIVILEGED_PORT_LIMIT else "other"


def _icmp_service(table: dict[tuple[int, int | None], str], icmp_type: int, second: int) -> str:
    return table.get((icmp_type, second)) or table.get((icmp_type, None)) or "oth_i"


def kdd_service(proto: str, orig_p: int, resp_p: int, ipv6: bool = False) -> str:
    """KDD service of a connection: ``proto`` as in conn.log (``tcp``/``udp``/``icmp``/...), Zeek's ports.

    ``ipv6`` selects the ICMPv6 table for ``icmp`` connections (Zeek logs ICMPv6 as ``icmp`` too).
    """
    if proto == "tcp":
        if orig_p == 20:
            return "ftp_data"
        return TCP_PORTS.get(resp_p) or _unnamed_port(resp_p)
    if proto == "udp":
        return UDP_PORTS.get(resp_p) or _unnamed_port(resp_p)
    if proto == "icmp":
        return _icmp_service(ICMPV6_TYPES if ipv6 else ICMP_TYPES, orig_p, resp_p)
    return "other"


# ``kdd_service`` remembered per distinct argument tuple: a capture has few distinct ports and types.
kdd_service_cached = functools.lru_cache(maxsize=1 << 16)(kdd_service)


def record_service(rec) -> str:
    """``kdd_service`` of a ConnectionRecord (IPv6 recognised from the address text)."""
    return kdd_service_cached(rec.proto, rec.orig_p, rec.resp_p, ":" in rec.orig_h)
