"""Damaged image files for tests of readers that must skip, count and name them."""

from __future__ import annotations

import struct
import zlib


def decompression_bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG of 65 bytes whose header claims ``width`` x ``height`` RGB pixels and that holds none.

    Decoding it would allocate gigabytes (PIL refuses it with a ``DecompressionBombError``); a careful
    reader rejects it from the header alone.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
