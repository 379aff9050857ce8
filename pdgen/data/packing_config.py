"""Packing configs: the image geometry a trunk fixes, and the packing policy a recipe chooses.

A ``PackingConfig`` has two halves:

- the *geometry* (``PackingGeometry``): pixels per latent token, ViT patch side and the sides of the two
  position tables. It is a property of the trunk (``BagelConfig``), and ``PackingGeometry.of_trunk`` is the
  one place that reads it off a trunk config. ``pdgen fit`` links it from ``model.trunk`` into the data
  module (``pdgen.lit.runner.link_trunk_geometry``); the inference loop checks a packing config against its
  trunk with the same mapping;
- the *policy*: image sizes, which images get a ViT copy, whether criticised steps are trained. Presets
  (``PACKING_PRESETS``, named like the trunks) choose it.

``PackingConfig.with_geometry`` puts a trunk's geometry into a preset, capping the image sizes at what the
trunk's position tables hold (so ``packing: tiny`` works with the ``embedded`` trunk unchanged).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the model package imports torch; the mapping only reads four fields of its config
    from pdgen.models.bagel.config import BagelConfig


@dataclass(frozen=True)
class PackingGeometry:
    """The image geometry of a trunk, which its packs must share (``PackingConfig``'s model-facing half).

    Args:
        latent_downsample: pixels per latent token side (VAE downsample x latent patch).
        max_latent_size: side of the latent position table.
        vit_patch_size: ViT patch side in pixels.
        vit_max_patches_per_side: side of the ViT position table.
    """

    latent_downsample: int
    max_latent_size: int
    vit_patch_size: int
    vit_max_patches_per_side: int

    @classmethod
    def of_trunk(cls, config: BagelConfig) -> PackingGeometry:
        """The geometry a trunk's ``BagelConfig`` fixes: the one mapping from a trunk to its packs."""
        return cls(
            latent_downsample=config.latent_downsample,
            max_latent_size=config.max_latent_size,
            vit_patch_size=config.vit.patch_size,
            vit_max_patches_per_side=config.vit.max_patches_per_side,
        )

    def mismatches(self, other: PackingGeometry) -> list[str]:
        """``name=mine (other: theirs)`` for every field where ``other`` differs."""
        return [
            f"{f.name}={getattr(self, f.name)} (trunk: {getattr(other, f.name)})"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True)
class PackingConfig:
    """Image geometry and packing policy; the model-facing half must match the trunk's ``BagelConfig``.

    Args:
        latent_downsample: pixels per latent token side (VAE downsample 8 x latent patch 2 = 16 in BAGEL).
        max_latent_size: side of the latent position table (``BagelConfig.max_latent_size``); flattened latent
            position ids are ``row * max_latent_size + col``.
        vit_patch_size: ViT patch side in pixels (14 for SigLIP).
        vit_max_patches_per_side: side of the ViT position table (70 in BAGEL); ids ``row * side + col``.
        vae_min_size: shortest image side, in pixels, after resizing for the VAE (``vae_max_size`` wins a
            conflict).
        vae_max_size: longest image side, in pixels, after resizing for the VAE.
        vit_min_size: shortest side for the ViT copy.
        vit_max_size: longest side for the ViT copy.
        vit_images: which generated images also get a ViT copy: ``"inspected"`` (those an Inspect step judges)
            or ``"all"``. The input image of an edit always gets one.
        train_criticised: also train (CE and MSE) on a step that the next Inspect refines.
    """

    latent_downsample: int = 16
    max_latent_size: int = 64
    vit_patch_size: int = 14
    vit_max_patches_per_side: int = 70
    vae_min_size: int = 512
    vae_max_size: int = 1024
    vit_min_size: int = 224
    vit_max_size: int = 518
    vit_images: Literal["inspected", "all"] = "inspected"
    train_criticised: bool = False

    def __post_init__(self) -> None:
        if self.vit_images not in ("inspected", "all"):
            raise ValueError(f"PackingConfig.vit_images={self.vit_images!r}; expected 'inspected' or 'all'")
        for kind, lo, hi, stride, cells in (
            ("vae", self.vae_min_size, self.vae_max_size, self.latent_downsample, self.max_latent_size),
            ("vit", self.vit_min_size, self.vit_max_size, self.vit_patch_size, self.vit_max_patches_per_side),
        ):
            if not stride <= lo <= hi:
                raise ValueError(
                    f"PackingConfig: need {stride} <= {kind}_min_size={lo} <= {kind}_max_size={hi}"
                )
            if hi // stride > cells:
                raise ValueError(
                    f"PackingConfig: {kind}_max_size={hi} gives {hi // stride} tokens per side, "
                    f"more than the position table's {cells}"
                )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> PackingConfig:
        """A preset (``bagel-7b-mot``, ``tiny``, ``embedded``: named like the trunks), fields overridden."""
        if name not in PACKING_PRESETS:
            raise ValueError(
                f"unknown packing preset {name!r}; known presets: {', '.join(sorted(PACKING_PRESETS))}"
            )
        return dataclasses.replace(PACKING_PRESETS[name], **overrides)

    @classmethod
    def for_model(cls, model_config: BagelConfig, **overrides: Any) -> PackingConfig:
        """Geometry from a trunk's ``BagelConfig`` (``PackingGeometry.of_trunk``), policy from
        ``overrides``."""
        return cls(**{**dataclasses.asdict(PackingGeometry.of_trunk(model_config)), **overrides})

    @property
    def geometry(self) -> PackingGeometry:
        """The model-facing half of this config."""
        return PackingGeometry(*(getattr(self, f.name) for f in dataclasses.fields(PackingGeometry)))

    def with_geometry(self, geometry: PackingGeometry | None) -> PackingConfig:
        """This config with ``geometry`` (None: unchanged); its policy (sizes, ViT copies) kept where the
        geometry allows: the largest image side is capped at what the position tables hold."""
        if geometry is None:
            return self
        g = geometry
        vae_max = min(self.vae_max_size, g.latent_downsample * g.max_latent_size)
        vit_max = min(self.vit_max_size, g.vit_patch_size * g.vit_max_patches_per_side)
        return dataclasses.replace(
            self,
            **dataclasses.asdict(g),
            vae_max_size=vae_max,
            vae_min_size=min(self.vae_min_size, vae_max),
            vit_max_size=vit_max,
            vit_min_size=min(self.vit_min_size, vit_max),
        )

    def for_trunk(self, model_config: BagelConfig) -> PackingConfig:
        """This config with a trunk's geometry (``with_geometry(PackingGeometry.of_trunk(model_config))``):
        what training and self-sampling read images with."""
        return self.with_geometry(PackingGeometry.of_trunk(model_config))


_TINY = PackingConfig(
    max_latent_size=16,
    vit_patch_size=8,
    vit_max_patches_per_side=16,
    vae_min_size=32,
    vae_max_size=64,
    vit_min_size=32,
    vit_max_size=64,
)

PACKING_PRESETS: dict[str, PackingConfig] = {
    # Paper: generation at 512-1024 px; ViT sizes of BAGEL's edit data (224-518 px).
    "bagel-7b-mot": PackingConfig(),
    # The tiny trunk: 16 px latent tokens on a 16 x 16 table, 8 px ViT patches on a 16 x 16 table;
    # the shapes world renders at 32-64 px.
    "tiny": _TINY,
    # The embedded default (`configs/full.yaml`): the tiny geometry and a ViT copy of every generated image,
    # so that whether to inspect an image is the model's choice (what it writes next, as its data shows it),
    # not the loop's.
    "embedded": dataclasses.replace(_TINY, vit_images="all"),
}
