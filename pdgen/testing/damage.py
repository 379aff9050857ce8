"""Damaged files for tests of readers that must skip, count and name what they cannot read: a PNG that
claims to be huge, a shard cut short or with members replaced."""

from __future__ import annotations

import io
import os
import struct
import tarfile
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


def rewrite_shard(
    shard: str | os.PathLike[str], keep: int | None = None, replace: dict[str, bytes] | None = None
) -> None:
    """Rewrite a webdataset shard in place with its first ``keep`` samples (a cut exactly between two
    samples: still a valid tar, only a sample count can tell) and the members named in ``replace`` given
    those bytes."""
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar if info.isfile()]
    kept = sorted({info.name.split(".")[0] for info, _ in members})[:keep]
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            if info.name.split(".")[0] in kept:
                data = (replace or {}).get(info.name, data)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
