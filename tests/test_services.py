"""KDD service mapping: ports, ftp_data by source port, ICMP/ICMPv6 type/code, private/other."""

from __future__ import annotations

import pytest

from features import services
from features.records import ConnectionRecord
from features.schema import SERVICE_VALUES
from features.services import kdd_service, record_service


@pytest.mark.parametrize("proto,orig_p,resp_p,expected", [
    ("tcp", 40000, 80, "http"),
    ("tcp", 40000, 443, "http_443"),
    ("tcp", 40000, 8001, "http_8001"),
    ("tcp", 40000, 2784, "http_2784"),
    ("tcp", 40000, 21, "ftp"),
    ("tcp", 20, 40001, "ftp_data"),  # active FTP: data connection from the server's port 20
    ("tcp", 40000, 20, "ftp_data"),
    ("tcp", 40000, 22, "ssh"),
    ("tcp", 40000, 23, "telnet"),
    ("tcp", 40000, 25, "smtp"),
    ("tcp", 40000, 53, "domain"),
    ("tcp", 40000, 6003, "X11"),
    ("tcp", 40000, 6667, "IRC"),
    ("tcp", 40000, 5190, "aol"),
    ("udp", 40000, 53, "domain_u"),
    ("udp", 40000, 69, "tftp_u"),
    ("udp", 40000, 123, "ntp_u"),
    ("udp", 40000, 161, "private"),  # SNMP: NSL-KDD's snmpguess rows are "private"
    ("udp", 40000, 80, "private"),  # TCP names do not apply to UDP
    ("udp", 5353, 5353, "other"),
    ("tcp", 40000, 1023, "private"),
    ("tcp", 40000, 1024, "other"),
    ("tcp", 40000, 49152, "other"),
    ("icmp", 8, 0, "eco_i"),
    ("icmp", 0, 8, "ecr_i"),
    ("icmp", 3, 3, "urp_i"),
    ("icmp", 3, 1, "urh_i"),
    ("icmp", 3, 0, "oth_i"),
    ("icmp", 5, 1, "red_i"),
    ("icmp", 11, 0, "tim_i"),
    ("icmp", 13, 14, "oth_i"),
    ("47", 0, 0, "other"),
])
def test_kdd_service(proto, orig_p, resp_p, expected):
    assert kdd_service(proto, orig_p, resp_p) == expected


@pytest.mark.parametrize("icmp_type,code,expected", [
    (128, 129, "eco_i"), (129, 128, "ecr_i"), (1, 4, "urp_i"), (1, 3, "urh_i"), (3, 0, "tim_i"),
    (137, 0, "red_i"), (135, 136, "oth_i"), (8, 0, "oth_i"),
])
def test_icmpv6_types(icmp_type, code, expected):
    assert kdd_service("icmp", icmp_type, code, ipv6=True) == expected


def test_record_service_recognises_ipv6_from_the_address():
    rec = ConnectionRecord(ts=0, uid="C1", orig_h="fe80::1", orig_p=128, resp_h="fe80::2", resp_p=129,
                           proto="icmp", duration=0, orig_bytes=0, resp_bytes=0, conn_state="OTH", history="",
                           orig_pkts=1, orig_ip_bytes=48, resp_pkts=0, resp_ip_bytes=0)
    assert record_service(rec) == "eco_i"


def test_every_produced_name_is_in_the_kdd_vocabulary():
    produced = (set(services.TCP_PORTS.values()) | set(services.UDP_PORTS.values())
                | set(services.ICMP_TYPES.values()) | set(services.ICMPV6_TYPES.values())
                | {"private", "other", "oth_i"})
    assert produced <= set(SERVICE_VALUES)
    # only the two names without a documented port and the extractor's ICMP catch-all are never produced
    assert set(SERVICE_VALUES) - produced == {"harvest", "pm_dump", "icmp"}
