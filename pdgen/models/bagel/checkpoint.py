"""Checkpoint I/O in BAGEL's release layout: safetensors only, meta-device init, one readable key report.

A checkpoint directory holds

    llm_config.json     Qwen2 fields (Hugging Face names)
    vit_config.json     SigLIP fields (`num_hidden_layers` counts the unused last layer)
    ema.safetensors     the model, under the release's key names
    ae.safetensors      the FLUX autoencoder (the trunk's `vae.` keys, prefix removed)
    pdgen_config.json   optional, written by pdgen: BAGEL's in-code fields and the autoencoder config;
                        absent in a release, which then gets the release values (max_latent_size 64, FLUX AE)

plus the tokenizer files, which `pdgen.data` reads. Nothing here unpickles: only safetensors are read.

This module knows the files, not the model: `BagelTrunk.from_pretrained` (`trunk.py`) builds the trunk on the
`meta` device (no memory), compares the safetensors *headers* read here with the module's expected keys and
shapes, and only then reads tensors (`read_state`), converting each to the requested dtype and device and
handing it to `load_state_dict(assign=True)`: 7B never exists twice. The two sin-cos tables
(`latent_pos_embed.pos_embed`, `vit_pos_embed.pos_embed`) are checked for shape if present but always
recomputed, never trusted (BAGEL's own loader drops them too); RoPE frequencies are recomputed as well.

Every problem ends up in one `KeyReport` (missing, unexpected, mis-shaped, each with its file) raised as
one `CheckpointError` unless `strict=False`, in which case it is logged and the affected modules keep a
fresh random init. `tools/inspect_checkpoint.py --dir` prints the same report from headers alone
(`BagelTrunk.check_directory`).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pdgen.io import atomic_path, write_atomic
from pdgen.models.bagel.config import PRESETS, AutoEncoderConfig, BagelConfig, LLMConfig, ViTConfig

log = logging.getLogger(__name__)

LLM_CONFIG = "llm_config.json"
VIT_CONFIG = "vit_config.json"
PDGEN_CONFIG = "pdgen_config.json"
MODEL_FILE = "ema.safetensors"
AE_FILE = "ae.safetensors"
AE_PREFIX = "vae."
FIXED_TABLES = frozenset({"latent_pos_embed.pos_embed", "vit_pos_embed.pos_embed"})
Shape = tuple[int, ...]


class CheckpointError(ValueError):
    """A checkpoint directory that does not fit the model (the message is the full key report)."""


def file_of(key: str) -> str:
    """Which file of the directory holds a trunk state-dict key."""
    return AE_FILE if key.startswith(AE_PREFIX) else MODEL_FILE


def key_in_file(key: str) -> str:
    """The key's name inside its file (the autoencoder's keys lose the `vae.` prefix)."""
    return key.removeprefix(AE_PREFIX)


@dataclass
class KeyReport:
    """Differences between the keys a model expects and those a checkpoint holds."""

    missing: dict[str, Shape] = field(default_factory=dict)
    unexpected: dict[str, Shape] = field(default_factory=dict)
    mismatched: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)  # key -> (expected, found)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, source: str) -> str:
        """A readable multi-line report; `source` names the checkpoint and what it was compared with."""
        if self.ok:
            return f"{source}: all keys and shapes match"
        problems = len(self.missing) + len(self.unexpected) + len(self.mismatched)
        lines = [f"{source}: {problems} key problem(s)"]

        def where(key: str) -> str:
            return f"{file_of(key)}: {key_in_file(key)}"

        for title, entries in (
            ("missing", {k: f"expected {list(s)}" for k, s in self.missing.items()}),
            (
                "mis-shaped",
                {k: f"expected {list(e)}, found {list(f)}" for k, (e, f) in self.mismatched.items()},
            ),
            ("unexpected", {k: f"found {list(s)}" for k, s in self.unexpected.items()}),
        ):
            if entries:
                lines.append(f"  {title} ({len(entries)}):")
                lines.extend(f"    {where(key)}  {text}" for key, text in sorted(entries.items()))
        return "\n".join(lines)


def compare_keys(expected: dict[str, Shape], found: dict[str, Shape]) -> KeyReport:
    """Key-by-key comparison; the fixed sin-cos tables may be absent (they are recomputed), not mis-shaped."""
    report = KeyReport()
    for key, shape in expected.items():
        if key not in found:
            if key not in FIXED_TABLES:
                report.missing[key] = shape
        elif tuple(found[key]) != tuple(shape):
            report.mismatched[key] = (tuple(shape), tuple(found[key]))
    report.unexpected = {key: tuple(shape) for key, shape in found.items() if key not in expected}
    return report


def expected_shapes(model: torch.nn.Module) -> dict[str, Shape]:
    """{key: shape} of a model's state dict (cheap on a meta-device model)."""
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


def read_safetensors_header(path: Path) -> dict[str, Shape]:
    """{key: shape} from a safetensors file's JSON header, without reading any tensor data."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: unreadable safetensors header ({err})") from None
    header.pop("__metadata__", None)
    return {key: tuple(entry["shape"]) for key, entry in header.items()}


def checkpoint_shapes(directory: Path) -> dict[str, Shape]:
    """{trunk key: shape} over `ema.safetensors` and `ae.safetensors` (headers only)."""
    shapes: dict[str, Shape] = {}
    for name, prefix in ((MODEL_FILE, ""), (AE_FILE, AE_PREFIX)):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: no {name}")
        shapes.update({prefix + key: shape for key, shape in read_safetensors_header(path).items()})
    return shapes


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from None


def load_config(directory: str | Path) -> BagelConfig:
    """The trunk config of a checkpoint directory (release defaults for what a release keeps in code)."""
    directory = Path(directory)
    llm = LLMConfig.from_llm_json(_read_json(directory / LLM_CONFIG), str(directory / LLM_CONFIG))
    vit = ViTConfig.from_vit_json(_read_json(directory / VIT_CONFIG), str(directory / VIT_CONFIG))
    release = PRESETS["bagel-7b-mot"]
    extra = _read_json(directory / PDGEN_CONFIG) if (directory / PDGEN_CONFIG).is_file() else {}
    try:
        vae = AutoEncoderConfig(**extra.pop("vae")) if "vae" in extra else release.vae
        return BagelConfig(
            name=extra.pop("name", directory.name),
            llm=llm,
            vit=vit,
            vae=vae,
            latent_patch_size=extra.pop("latent_patch_size", release.latent_patch_size),
            max_latent_size=extra.pop("max_latent_size", release.max_latent_size),
            timestep_shift=extra.pop("timestep_shift", release.timestep_shift),
        )
    except TypeError as err:  # an unknown field in the autoencoder section
        raise CheckpointError(f"{directory / PDGEN_CONFIG}: {err}") from None


def read_state(
    directory: Path, skip: set[str] | frozenset[str], dtype: torch.dtype | None, device: torch.device
) -> dict[str, torch.Tensor]:
    """A directory's trunk state dict less the `skip` keys, each tensor converted as it is read.

    Args:
        directory: checkpoint directory.
        skip: trunk keys not to read (the fixed tables, and what a non-strict load found wrong).
        dtype: the tensors' dtype; None keeps each tensor's stored dtype.
        device: where the tensors are put.
    """
    state: dict[str, torch.Tensor] = {}
    for name, prefix in ((MODEL_FILE, ""), (AE_FILE, AE_PREFIX)):
        with safe_open(directory / name, framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if prefix + key not in skip:
                    tensor = f.get_tensor(key)
                    state[prefix + key] = tensor.to(device=device, dtype=dtype or tensor.dtype)
    return state


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def save_checkpoint(directory: str | Path, config: BagelConfig, state_dict: dict[str, torch.Tensor]) -> None:
    """Writes a trunk's config and state dict in the release layout (plus `pdgen_config.json`), atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / LLM_CONFIG, config.llm.to_llm_json())
    _write_json(directory / VIT_CONFIG, config.vit.to_vit_json())
    extra = config.bagel_fields()
    extra["vae"] = {k: v for k, v in asdict(config.vae).items() if k != "downsample"}
    extra["vae"]["ch_mult"] = list(config.vae.ch_mult)
    _write_json(directory / PDGEN_CONFIG, extra)

    tensors = {key: t.detach().to("cpu").contiguous() for key, t in state_dict.items()}
    for name, wanted in ((MODEL_FILE, False), (AE_FILE, True)):
        part = {key_in_file(k): t for k, t in tensors.items() if k.startswith(AE_PREFIX) == wanted}
        with atomic_path(directory / name) as tmp:
            save_file(part, str(tmp), metadata={"format": "pt"})
