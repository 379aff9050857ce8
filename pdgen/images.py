"""Opening an image file with a size limit, and an error that names the file.

PIL decodes whatever a header claims: a 69-byte PNG can say it is 20000 x 20000 pixels and ask for 1.2 GB
(PIL refuses above 179 million pixels with its own exception type, which callers that catch ``OSError``
miss). ``open_image`` reads the header first, refuses anything larger than ``MAX_IMAGE_PIXELS`` and turns
every way a file can be unreadable — truncated, not an image, a decompression bomb — into one
``UnreadableImage`` that names the file and says why, so a reader can skip and count the sample.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from PIL import Image

from pdgen.errors import UserError

MAX_IMAGE_PIXELS = 8192 * 8192
"""The largest image pdgen opens: far above what it trains on (BAGEL's 1024 px), far below a bomb."""


class UnreadableImage(UserError):
    """An image that cannot be decoded; ``name`` is the file, ``why`` what is wrong with it. A ``UserError``
    (a ``ValueError``): a command that meets one ends with its message.

    Args:
        name: the file or member name.
        why: what is wrong, e.g. ``"image file is truncated"``.
    """

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why
        super().__init__(f"{name}: {why}")


def open_image(
    source: bytes | str | os.PathLike[str], name: str | None = None, formats: Sequence[str] | None = None
) -> Image.Image:
    """The image in ``source`` (a file path or the file's bytes), decoded, with the file closed.

    Args:
        source: a path, or the encoded bytes.
        name: names the image in errors; default the path (``"image"`` for bytes).
        formats: the formats to accept (e.g. ``["PNG"]``); None accepts any PIL reads.

    Raises:
        UnreadableImage: the file is missing, truncated, not an image of ``formats``, or larger than
            ``MAX_IMAGE_PIXELS``.
    """
    if name is None:
        name = "image" if isinstance(source, bytes) else os.fspath(source)
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(stream, formats=formats) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UnreadableImage(
                    name,
                    f"its header says {width} x {height} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                    "pdgen opens (a decompression bomb?)",
                )
            return opened.copy()  # decodes the pixels while the file is open
    except UnreadableImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(name, str(error) or type(error).__name__) from error
