"""Classic BPF programs for the live-capture socket: compile a tcpdump expression, cap the snap length.

Filtering in the kernel is what keeps a busy link affordable: frames the operator does not want never reach
the ring, never cost a copy and never count as drops. Expressions are compiled by libpcap (through scapy's
``compile_filter``, the same compiler tcpdump uses, so the syntax and semantics are exactly tcpdump's);
libpcap is loaded only when a filter is given (Debian package ``libpcap0.8``).

The snap length is enforced the way libpcap enforces it: every accepting ``ret #k`` of the program returns
the snap length, and "no filter" is the one-instruction program ``ret #snaplen``. The kernel copies at most
that many bytes of each frame into the ring.
"""

from __future__ import annotations

import ctypes
import re
import socket
import struct

import numpy as np

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; not exported by Python's socket module
BPF_RET_K = 0x06  # BPF_RET | BPF_K: "accept k bytes" (k = 0 drops the frame)

# struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }
INSN_DTYPE = np.dtype([("code", "<u2"), ("jt", "u1"), ("jf", "u1"), ("k", "<u4")])
# struct sock_fprog { unsigned short len; struct sock_filter *filter; } (x86-64 / arm64 layout)
_SOCK_FPROG = struct.Struct("HxxxxxxQ")


class FilterError(ValueError):
    """A filter expression that cannot be compiled; the message names the expression (one line)."""


def compile_program(expression: str, linktype: int, snaplen: int) -> bytes:
    """Compile a tcpdump filter expression for frames of ``linktype`` into a classic BPF program (bytes).

    An empty expression accepts everything. The returned program truncates accepted frames to ``snaplen``.
    """
    if not expression.strip():
        return np.array([(BPF_RET_K, 0, 0, snaplen)], dtype=INSN_DTYPE).tobytes()
    from scapy.arch.common import compile_filter  # imported here: costs ~0.5 s, needed only with a filter
    from scapy.error import Scapy_Exception

    try:
        program = compile_filter(expression, linktype=linktype)
    except ImportError:
        raise FilterError(
            f"cannot compile BPF filter {expression!r}: libpcap is not installed "
            "(Debian/Ubuntu: apt-get install libpcap0.8)"
        ) from None
    except (Scapy_Exception, OSError) as exc:
        raise FilterError(f"invalid BPF filter {expression!r}: {_libpcap_reason(exc)}") from None
    raw = ctypes.string_at(program.bf_insns, program.bf_len * INSN_DTYPE.itemsize)
    return cap_snaplen(raw, snaplen)


def cap_snaplen(program: bytes, snaplen: int) -> bytes:
    """Make every accepting ``ret #k`` of ``program`` return ``snaplen`` (libpcap compiles for its own)."""
    insns = np.frombuffer(program, dtype=INSN_DTYPE).copy()
    accept = (insns["code"] == BPF_RET_K) & (insns["k"] != 0)
    insns["k"][accept] = snaplen
    return insns.tobytes()


def attach(sock: socket.socket, program: bytes) -> None:
    """Attach a classic BPF program to a socket (SO_ATTACH_FILTER; the kernel copies and verifies it)."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SOCK_FPROG.pack(len(program) // INSN_DTYPE.itemsize, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _libpcap_reason(exc: Exception) -> str:
    """libpcap's own words (e.g. "syntax error") out of scapy's message, which repeats the expression."""
    text = str(exc)
    match = re.search(r"\(([^()]*)\)\s*$", text)
    return match.group(1) if match else text
