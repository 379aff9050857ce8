"""`WorldDetector`: image -> `Detection`s (class, box, mask, colour, score) for the shapes world.

Built for generated images as much as rendered ones (blur, noise, slightly wrong hues), in five steps:
1. smooth with a 3x3 box filter (noise sigma 0.1 -> ~0.03) and estimate the background as the median
   of the border pixels;
2. foreground = pixels far from the background; 4-connected components of it are object candidates;
3. colour: for each palette colour c, every pixel is unmixed as `bg + a (c - bg)` (a in [0, 1], which
   models anti-aliasing and blur as blending with the background); the colour with the smallest
   residual wins. This is GenEval's colour vote done by least squares instead of CLIP;
4. the coverage map `a` of the winning colour, thresholded at 1/2, is the instance mask and its box;
5. class: the coverage map cropped to the box and resized to `template_size` is compared with every
   class prototype (mean absolute difference); a softmax over the negated differences, with a "none"
   entry at `reject_distance`, gives the score; a box far from square adds to every distance. A blob
   that fits no silhouette (two shapes merged, a bar, a smear) scores low or is dropped.

Shapes: (H, W) image, (N,) pixels of one component, (K,) palette colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageFilter

from pdgen.eval.geneval import Detection
from pdgen.scene.vocabulary import COLORS
from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.layout import Placed, WorldState
from pdgen.world.render import render
from pdgen.world.shapes import PALETTE

MAX_LOG_ASPECT = 0.3
"""A box may be this far from square (|log(w / h)|) before the aspect penalty starts: blur shortens tips."""

_PALETTE = np.array([PALETTE[c] for c in COLORS], dtype=np.float32) / 255.0  # (K, 3)


def _box_filter(x: np.ndarray) -> np.ndarray:
    """3x3 mean with edge replication."""
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def connected_components(mask: np.ndarray) -> np.ndarray:
    """4-connected labels of a bool (H, W) mask: each component gets the flat index of one of its
    pixels, background -1. Label propagation with pointer jumping: a handful of numpy passes."""
    h, w = mask.shape
    big = h * w
    labels = np.where(mask, np.arange(big).reshape(h, w), big)
    while True:
        new = labels.copy()
        new[1:] = np.minimum(new[1:], labels[:-1])
        new[:-1] = np.minimum(new[:-1], labels[1:])
        new[:, 1:] = np.minimum(new[:, 1:], labels[:, :-1])
        new[:, :-1] = np.minimum(new[:, :-1], labels[:, 1:])
        new = np.where(mask, new, big)
        flat = np.append(new.ravel(), big)
        new = np.where(mask, flat[flat[new]], big)  # pointer jumping: a label's label
        if np.array_equal(new, labels):
            return np.where(mask, labels, -1)
        labels = new


@dataclass(frozen=True)
class _Blob:
    """One measured component: colour index, coverage crop (t, t), mask (H, W) and pixel box."""

    color: int
    crop: np.ndarray
    mask: np.ndarray
    box: tuple[float, float, float, float]


def measure(image: Image.Image, template_size: int, foreground: float, min_area: float) -> list[_Blob]:
    """Steps 1-4: the image's components with their colour, mask, box and normalised coverage crop."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    smooth = _box_filter(x)
    border = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    bg = np.median(border, axis=0)  # (3,)
    fg = np.linalg.norm(smooth - bg, axis=-1) > foreground
    labels = connected_components(fg)
    h, w = fg.shape
    blobs = []
    for label in np.unique(labels[labels >= 0]):
        component = labels == label
        if component.sum() >= min_area * h * w:
            blob = _measure(smooth, bg, component, template_size)
            if blob is not None:
                blobs.append(blob)
    return blobs


def _measure(smooth: np.ndarray, bg: np.ndarray, component: np.ndarray, template_size: int) -> _Blob | None:
    """Steps 3-4 for one component (a bool (H, W) mask)."""
    # Grow the component by two pixels so that its faint anti-aliased rim is unmixed too.
    region = component.copy()
    for _ in range(2):
        region[1:] |= region[:-1].copy()
        region[:-1] |= region[1:].copy()
        region[:, 1:] |= region[:, :-1].copy()
        region[:, :-1] |= region[:, 1:].copy()
    pixels = smooth[component] - bg  # (N, 3)
    directions = _PALETTE - bg  # (K, 3)
    coverage = np.clip(pixels @ directions.T / (directions * directions).sum(-1), 0, 1)  # (N, K)
    residual = ((pixels[:, None, :] - coverage[..., None] * directions) ** 2).sum(-1).sum(0)  # (K,)
    k = int(np.argmin(residual))
    alpha = np.clip((smooth - bg) @ directions[k] / (directions[k] @ directions[k]), 0, 1)  # (H, W)
    alpha = alpha * region
    mask = alpha > 0.5
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    t = template_size
    crop = Image.fromarray(alpha[y1:y2, x1:x2].astype(np.float32))  # mode "F"
    crop = np.asarray(crop.resize((t, t), Image.Resampling.BILINEAR))  # (t, t)
    return _Blob(k, crop, mask, (float(x1), float(y1), float(x2), float(y2)))


class WorldDetector:
    """Detector for the shapes world; also GenEval's colour classifier for it (`classify_colors`).

    Shape prototypes are made by this detector's own measuring pipeline on rendered single shapes,
    sharp and blurred (Gaussian sigma `prototype_blurs`, in pixels at the world's size), so that what a
    blur does to a silhouette (rounded tips, a slightly smaller box) is in the prototypes too.

    Args:
        config: the world whose images it reads (image size, object size, classes).
        classes: the silhouettes it knows; default the config's.
        template_size: side of the normalised crop compared with the prototypes.
        foreground: minimum RGB distance (0-1 units, per pixel after smoothing) from the background.
        min_area: smallest object, as a fraction of the image area.
        temperature: softmax temperature over the prototype distances.
        reject_distance: distance of the "none of these" entry; crops farther from every class lose.
        prototype_blurs: Gaussian blurs (pixels) the prototypes are rendered with.
    """

    def __init__(
        self,
        config: WorldConfig = DEFAULT_WORLD,
        classes: Sequence[str] | None = None,
        template_size: int = 20,
        foreground: float = 0.15,
        min_area: float = 0.004,
        temperature: float = 0.005,
        reject_distance: float = 0.2,
        prototype_blurs: Sequence[float] = (0.0, 0.7, 1.0, 1.4),
    ) -> None:
        self.config = config
        self.classes = tuple(config.classes if classes is None else classes)
        self.template_size = template_size
        self.foreground = foreground
        self.min_area = min_area
        self.temperature = temperature
        self.reject_distance = reject_distance
        self._prototypes = _prototypes(
            config, self.classes, template_size, tuple(prototype_blurs), foreground
        )

    def detect(self, image: Image.Image) -> list[Detection]:
        """All shapes found in the image, in reading order of their first pixel."""
        detections = []
        for blob in measure(image, self.template_size, self.foreground, self.min_area):
            distance = np.abs(self._prototypes - blob.crop).mean(axis=(2, 3)).min(axis=1)  # (C,)
            # Every silhouette fills a square box; the crop is squashed to a square, so a bar would pass
            # for a square without this penalty on how far the box is from square.
            x1, y1, x2, y2 = blob.box
            distance = distance + max(0.0, abs(np.log((x2 - x1) / (y2 - y1))) - MAX_LOG_ASPECT)
            logits = -np.append(distance, self.reject_distance) / self.temperature
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            best = int(np.argmax(probs))
            if best < len(self.classes):
                detections.append(
                    Detection(self.classes[best], blob.box, float(probs[best]), blob.mask, COLORS[blob.color])
                )
        return detections

    def classify_colors(self, image: Image.Image, detections: Sequence[Detection], name: str) -> list[str]:
        """The colours found at detection time (GenEval's colour-classifier slot)."""
        return [d.color for d in detections]


@cache
def _prototypes(
    config: WorldConfig,
    classes: tuple[str, ...],
    template_size: int,
    blurs: tuple[float, ...],
    foreground: float,
) -> np.ndarray:
    """(C, P, t, t) coverage crops of single rendered shapes, averaged over sizes and sub-pixel offsets."""
    side = config.object_scale / config.grid
    out = np.zeros((len(classes), len(blurs), template_size, template_size), np.float32)
    for c, name in enumerate(classes):
        for b, blur in enumerate(blurs):
            crops = []
            for scale, shift in ((0.95, 0.0), (1.0, 0.3), (1.05, 0.6)):
                s = side * scale
                lo = 0.5 - s / 2 + shift / config.size
                state = WorldState((Placed(name, "blue", None, (lo, lo, lo + s, lo + s), (0, 0)),))
                image = render(state, config)
                if blur:
                    image = image.filter(ImageFilter.GaussianBlur(blur))
                crops += [blob.crop for blob in measure(image, template_size, foreground, 0.0)]
            if not crops:
                raise ValueError(
                    f"a {name} is too small to see at {config.size} px on a {config.grid}x{config.grid} grid"
                )
            out[c, b] = np.mean(crops, axis=0)
    return out
