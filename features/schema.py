"""The named, versioned feature schema shared by every producer and consumer of feature vectors.

Why a schema: one model must be able to train on a dataset (NSL-KDD, KDD'99, Zeek conn logs) and score live
traffic, or the other way round. Every producer (pcap -> connections -> windows, the dataset loaders, the
Zeek conn.log reader) emits a ``FEATURE_DTYPE`` table, and a saved model records ``SCHEMA_NAME`` and
``SCHEMA_VERSION`` so loading it against other data is refused. Bump the version whenever a column's
meaning, order or vocabulary changes.

The schema holds the 28 KDD'99 features that can be computed from packet headers: the 9 basic features and
the 19 traffic features (9 time-based over the past 2 seconds, 10 host-based over the past 100
connections). KDD's content features 10-22 (hot, num_failed_logins, ... is_guest_login) need payload
inspection of specific protocols and are deliberately NOT computed: they are listed in
``NOT_COMPUTED_CONTENT_FEATURES`` and dropped by the dataset loaders.

Categorical columns are stored as int16 codes into the vocabularies below; ``UNKNOWN_CODE`` (-1) marks a
value outside the vocabulary, which the model maps to an explicit "unknown" bucket.
"""

from __future__ import annotations

import itertools

import numpy as np

SCHEMA_NAME = "kdd-header-28"
SCHEMA_VERSION = 1
UNKNOWN_CODE = -1

PROTOCOL_VALUES: tuple[str, ...] = ("tcp", "udp", "icmp")

# KDD flag = Zeek conn_state (KDD uses Bro's states; RSTRH and SHR exist in Zeek but never in the datasets).
FLAG_VALUES: tuple[str, ...] = (
    "SF", "S0", "S1", "S2", "S3", "REJ", "RSTOS0", "RSTO", "RSTR", "SH", "RSTRH", "SHR", "OTH",
)

# The KDD service vocabulary: the 70 services of NSL-KDD/KDD'99 (identical to the common C++ extractor's
# list, which adds the ICMP catch-all names "icmp" and "oth_i"; both are kept so its files load too).
SERVICE_VALUES: tuple[str, ...] = (
    "IRC", "X11", "Z39_50", "aol", "auth", "bgp", "courier", "csnet_ns", "ctf", "daytime", "discard",
    "domain", "domain_u", "echo", "eco_i", "ecr_i", "efs", "exec", "finger", "ftp", "ftp_data", "gopher",
    "harvest", "hostnames", "http", "http_2784", "http_443", "http_8001", "icmp", "imap4", "iso_tsap",
    "klogin", "kshell", "ldap", "link", "login", "mtp", "name", "netbios_dgm", "netbios_ns", "netbios_ssn",
    "netstat", "nnsp", "nntp", "ntp_u", "oth_i", "other", "pm_dump", "pop_2", "pop_3", "printer",
    "private", "red_i", "remote_job", "rje", "shell", "smtp", "sql_net", "ssh", "sunrpc", "supdup",
    "systat", "telnet", "tftp_u", "tim_i", "time", "urh_i", "urp_i", "uucp", "uucp_path", "vmnet", "whois",
)

CATEGORICAL_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "protocol_type": PROTOCOL_VALUES,
    "service": SERVICE_VALUES,
    "flag": FLAG_VALUES,
}

BASIC_FEATURES: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment",
    "urgent",
)
NOT_COMPUTED_CONTENT_FEATURES: tuple[str, ...] = (
    "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds", "is_host_login",
    "is_guest_login",
)
TIME_FEATURES: tuple[str, ...] = (
    "count", "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate",
)
HOST_FEATURES: tuple[str, ...] = (
    "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)

# The 41 KDD'99 feature columns in the datasets' order (NSL-KDD/KDD'99 files: these, then the label).
KDD41_COLUMNS: tuple[str, ...] = BASIC_FEATURES + NOT_COMPUTED_CONTENT_FEATURES + TIME_FEATURES + HOST_FEATURES

# The schema: the 28 computed features, in the column order of the common C++ KDD extractor's output.
FEATURE_NAMES: tuple[str, ...] = BASIC_FEATURES + TIME_FEATURES + HOST_FEATURES
NUMERIC_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in CATEGORICAL_VOCABULARIES)

FEATURE_DTYPE = np.dtype(
    [(name, "<i2" if name in CATEGORICAL_VOCABULARIES else "<f8") for name in FEATURE_NAMES]
)

_CODE_MAPS = {col: {v: i for i, v in enumerate(vocab)} for col, vocab in CATEGORICAL_VOCABULARIES.items()}


def encode_category(column: str, value: str) -> int:
    """Vocabulary code of ``value`` in a categorical column, ``UNKNOWN_CODE`` if it is not in the vocabulary."""
    return _CODE_MAPS[column].get(value, UNKNOWN_CODE)


def encode_categories(column: str, values) -> np.ndarray:
    """Vectorized ``encode_category`` over an iterable of strings."""
    table = _CODE_MAPS[column]
    return np.fromiter(map(table.get, values, itertools.repeat(UNKNOWN_CODE)), dtype="<i2")


def decode_category(column: str, code: int) -> str:
    """Text of a vocabulary code; ``"unknown"`` for ``UNKNOWN_CODE``."""
    return CATEGORICAL_VOCABULARIES[column][code] if code >= 0 else "unknown"


def schema_id() -> dict[str, object]:
    """What a saved model records about the data it was trained on."""
    return {"name": SCHEMA_NAME, "version": SCHEMA_VERSION, "features": list(FEATURE_NAMES)}
