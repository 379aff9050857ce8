"""Opening images: every unreadable file becomes one error that names it, decompression bombs included."""

import io

import pytest
from PIL import Image

from pdgen.images import MAX_IMAGE_PIXELS, UnreadableImage, open_image
from pdgen.testing.damage import decompression_bomb_png


def png(size=(8, 8), color="red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_is_decoded_and_its_file_closed(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png())
    image = open_image(path)
    assert image.size == (8, 8) and image.getpixel((0, 0)) == (255, 0, 0)
    path.unlink()  # nothing holds the file open
    assert open_image(png(), formats=["PNG"]).size == (8, 8)


@pytest.mark.parametrize("width", [9000, 20_000])  # above pdgen's limit; above PIL's own
def test_a_decompression_bomb_is_refused_from_its_header(width):
    bomb = decompression_bomb_png(width, width)
    assert len(bomb) < 100 and width * width > MAX_IMAGE_PIXELS
    with pytest.raises(UnreadableImage, match=r"bomb\.png: .*(pixels|decompression bomb)") as error:
        open_image(bomb, "bomb.png", formats=["PNG"])
    assert error.value.name == "bomb.png"


def test_a_truncated_or_foreign_file_names_itself(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(png((64, 64))[:60])
    with pytest.raises(UnreadableImage, match=f"^{path}: "):
        open_image(path)
    with pytest.raises(UnreadableImage, match="x.jpg"):
        open_image(b"not an image at all", "x.jpg")
    with pytest.raises(UnreadableImage, match="missing.png"):
        open_image(tmp_path / "missing.png")
