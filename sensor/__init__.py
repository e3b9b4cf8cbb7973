"""netwarden sensor: packet sources, decoding, CLI, config and outputs.

Only leaf modules (``sensor.packets``) may be imported by ``features``, ``models`` and ``agent``; the
CLI and daemon wiring import everything else.
"""

__version__ = "0.1.0"
