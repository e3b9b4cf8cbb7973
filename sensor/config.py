"""One YAML config file, validated at start against a declared option table.

Every option is declared once in ``OPTIONS`` with its type, default, allowed range and documentation; the
README's config reference and ``deploy/netwarden.yaml`` are written from that table (``netwarden
check-config --print-defaults``), so code, docs and the shipped default cannot drift apart. Unknown keys,
wrong types and out-of-range values are rejected with a message that names the key, before any work starts.
Defaults work without a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem, worded for the operator; the CLI prints it on one line and exits 2."""


@dataclass(frozen=True)
class Option:
    key: str  # dotted path, e.g. "tracker.tcp_inactivity_timeout"
    type: type | tuple[type, ...]
    default: Any
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    item_type: type | None = None  # for list options: the type every element must have


OPTIONS: tuple[Option, ...] = (
    # logging
    Option("logging.level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    Option("logging.format", str, "auto",
           "auto: human console lines on a TTY, JSON lines otherwise (journald); or force console/json.",
           choices=("auto", "console", "json")),
    # capture
    Option("capture.interface", str, "eth0", "Interface for live capture (AF_PACKET)."),
    Option("capture.bpf_filter", str, "", "BPF filter expression compiled into the kernel; empty = all."),
    Option("capture.promiscuous", bool, True, "Put the interface in promiscuous mode while capturing."),
    Option("capture.snaplen", int, 262144, "Bytes kept per frame.", min=64, max=262144),
    Option("capture.block_size", int, 1 << 20, "TPACKET_V3 ring block size in bytes (one block = one batch).",
           min=4096, max=1 << 27),
    Option("capture.block_count", int, 64, "Number of ring blocks.", min=2, max=4096),
    Option("capture.block_timeout_ms", int, 100,
           "Kernel hands over a partly filled block after this many ms, bounding latency on a quiet link.",
           min=1, max=10000),
    Option("capture.ignore_outgoing", bool, True,
           "Set PACKET_IGNORE_OUTGOING so frames sent by this host are not seen twice (loopback)."),
    # reading capture files
    Option("reader.batch_size", int, 65536, "Packets per batch when reading capture files.", min=1,
           max=1 << 24),
    Option("reader.workers", int, 2,
           "Processes per capture file: 2 = a child process reads and decodes while this one tracks, computes "
           "features and writes; 3 = as 2, but `netwarden features` computes features and writes in another "
           "child (pays with 3 free CPUs); 1 = all in one process (also used where only one CPU is usable).",
           min=1, max=3),
    # connection tracking (Zeek's defaults)
    Option("tracker.tcp_inactivity_timeout", float, 300.0, "Seconds of silence before a TCP connection ends.",
           min=0.001),
    Option("tracker.udp_inactivity_timeout", float, 60.0, "Seconds of silence before a UDP flow ends.", min=0.001),
    Option("tracker.icmp_inactivity_timeout", float, 60.0, "Seconds of silence before an ICMP flow ends.",
           min=0.001),
    Option("tracker.tcp_attempt_timeout", float, 5.0,
           "Seconds an unanswered SYN attempt is kept (Zeek tcp_SYN_timeout / tcp_attempt_delay).", min=0.001),
    Option("tracker.tcp_close_linger", float, 5.0, "Seconds a closed (FIN both ways) connection lingers.",
           min=0.0),
    Option("tracker.tcp_reset_linger", float, 5.0, "Seconds a reset connection lingers.", min=0.0),
    Option("tracker.active_timeout", float, None,
           "Emit an interim record for connections alive longer than this (seconds); null = never.",
           min=1.0, nullable=True),
    Option("tracker.max_connections", int, 1_000_000,
           "Cap on tracked connections; past it, unanswered attempts are evicted first (SYN-flood safe).",
           min=1000),
    # KDD traffic windows
    Option("windows.time_window", float, 2.0, "Seconds of the KDD time-based window (count, srv_count ...).",
           min=0.001),
    Option("windows.host_window", int, 100, "Connections in the KDD host-based window (dst_host_*).", min=1,
           max=100000),
    Option("windows.max_entries", int, 1_000_000,
           "Cap on connections remembered for the host-based windows; least recently seen hosts and "
           "services are forgotten past it (bounded memory).", min=200000, max=100_000_000),
    # model
    Option("model.encoder_layers", list, [64, 32], "Encoder layer widths; the decoder mirrors them.",
           item_type=int),
    Option("model.bottleneck", int, 8, "Bottleneck width.", min=1, max=1024),
    Option("model.activation", str, "relu", "Hidden-layer activation.", choices=("relu", "tanh", "elu", "selu")),
    Option("model.dropout", float, 0.0, "Dropout rate after each hidden layer.", min=0.0, max=0.9),
    Option("model.noise_stddev", float, 0.0, "Gaussian input noise (denoising autoencoder); 0 = off.", min=0.0),
    Option("model.ensemble", int, 1, "Autoencoders trained side by side (different seeds); scores averaged.",
           min=1, max=32),
    Option("model.scaling", str, "standard", "Numeric feature scaling after log1p of counts and bytes.",
           choices=("standard", "robust")),
    Option("model.clip", float, 1000.0, "Scaled numeric features are clipped to +-clip.", min=1.0),
    Option("model.epochs", int, 40, "Maximum training epochs.", min=1, max=10000),
    Option("model.batch_size", int, 256, "Training batch size.", min=1, max=1 << 20),
    Option("model.learning_rate", float, 0.001, "Adam learning rate.", min=1e-7, max=1.0),
    Option("model.early_stopping_patience", int, 5, "Epochs without validation improvement before stopping.",
           min=1),
    Option("model.validation_fraction", float, 0.2,
           "Share of normal rows held out to validate and calibrate the threshold.", min=0.01, max=0.9),
    Option("model.target_fpr", float, 0.01, "False positive rate on held-out normal rows at the threshold.",
           min=0.0001, max=0.5),
    Option("model.seed", int, 42, "Random seed; training is reproducible for a fixed seed.", min=0),
    Option("model.label_column", str, "label",
           "Column holding the label in labelled inputs; unlabelled input is taken as baseline."),
    Option("model.normal_labels", list, ["normal", "benign", "Benign"],
           "Label values that count as normal traffic.", item_type=str),
    Option("model.ignore_labels", list, ["Background", "background"],
           "Label values that are neither normal nor attack (Stratosphere's unverified background traffic): "
           "left out of training and of evaluation metrics.", item_type=str),
    Option("model.top_features", int, 3, "Features named in each score's explanation.", min=1, max=28),
)

_BY_KEY = {o.key: o for o in OPTIONS}


def _check_value(opt: Option, value: Any) -> Any:
    if value is None:
        if opt.nullable:
            return None
        raise ConfigError(f"{opt.key}: must not be null")
    types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{opt.key}: expected {_type_name(opt)}, got a boolean")
    if not isinstance(value, types):
        raise ConfigError(f"{opt.key}: expected {_type_name(opt)}, got {type(value).__name__} {value!r}")
    if opt.item_type is not None:
        for i, item in enumerate(value):
            if not isinstance(item, opt.item_type) or isinstance(item, bool):
                raise ConfigError(f"{opt.key}[{i}]: expected {opt.item_type.__name__}, got {item!r}")
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"{opt.key}: {value!r} is not one of {', '.join(map(str, opt.choices))}")
    if opt.min is not None and value < opt.min:
        raise ConfigError(f"{opt.key}: {value} is below the minimum {opt.min}")
    if opt.max is not None and value > opt.max:
        raise ConfigError(f"{opt.key}: {value} is above the maximum {opt.max}")
    return value


def _type_name(opt: Option) -> str:
    types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
                        "list": "a list"}.get(t.__name__, t.__name__) for t in types)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str):
            raise ConfigError(f"{path}: keys must be strings")
        section_known = any(k.startswith(path + ".") for k in _BY_KEY)
        if isinstance(value, dict) and section_known:
            flat.update(_flatten(value, path + "."))
        elif section_known:
            raise ConfigError(f"{path}: expected a mapping of options, got {type(value).__name__}")
        else:
            flat[path] = value
    return flat


class Config:
    """Validated settings; read with ``cfg["tracker.udp_inactivity_timeout"]`` or ``cfg.section("tracker")``."""

    def __init__(self, values: dict[str, Any], source: str | None = None) -> None:
        self._values = values
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def section(self, name: str) -> dict[str, Any]:
        """Options of one section as a plain dict keyed by the short name (``tcp_inactivity_timeout``)."""
        prefix = name + "."
        return {k[len(prefix):]: v for k, v in self._values.items() if k.startswith(prefix)}


def defaults() -> Config:
    return Config({o.key: o.default for o in OPTIONS})


def from_mapping(tree: Any, source: str | None = None) -> Config:
    """Validate a parsed YAML document (None = empty file) and merge it over the defaults."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError("the top level of the config must be a mapping of sections")
    values = {o.key: o.default for o in OPTIONS}
    for key, value in _flatten(tree).items():
        opt = _BY_KEY.get(key)
        if opt is None:
            raise ConfigError(f"{key}: unknown option")
        values[key] = _check_value(opt, value)
    return Config(values, source)


def load(path: str | Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return defaults()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    return from_mapping(tree, str(p))


def render_markdown() -> str:
    """The config reference as a Markdown table (embedded in the README; a test keeps them equal)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for o in OPTIONS:
        rows.append(f"| `{o.key}` | `{_yaml_scalar(o.default)}` | {o.doc}{_bounds(o, ' (', ')')} |")
    return "\n".join(rows) + "\n"


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _bounds(o: Option, before: str, after: str) -> str:
    bounds = []
    if o.choices:
        bounds.append("one of " + ", ".join(map(str, o.choices)))
    if o.min is not None:
        bounds.append(f"min {_number(o.min)}")
    if o.max is not None:
        bounds.append(f"max {_number(o.max)}")
    return f"{before}{'; '.join(bounds)}{after}" if bounds else ""


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def render_defaults() -> str:
    """The default config as commented YAML: every option with its documentation (deploy/netwarden.yaml)."""
    lines = ["# netwarden configuration. Every option, its default and its meaning.", ""]
    section = None
    for o in OPTIONS:
        sec, name = o.key.split(".", 1)
        if sec != section:
            lines.append(f"{sec}:")
            section = sec
        lines.append(f"  # {o.doc}{_bounds(o, ' (', ')')}")
        lines.append(f"  {name}: {_yaml_scalar(o.default)}")
    return "\n".join(lines) + "\n"
