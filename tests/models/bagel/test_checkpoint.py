"""Checkpoint I/O: the release's key manifest, round trips, the key report and the two tools."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from bagel_testkit import INSPECTED
from safetensors.torch import load_file, save_file

from pdgen.models.bagel import BagelConfig, BagelTrunk, CheckpointError
from pdgen.models.bagel.checkpoint import expected_shapes, read_safetensors_header
from pdgen.models.bagel.embeddings import sincos_2d

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def release_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        trunk = BagelTrunk(BagelConfig.from_name("bagel-7b-mot"))
    return expected_shapes(trunk)


def test_7b_preset_has_exactly_the_keys_and_shapes_of_ema_safetensors(release_shapes):
    manifest = json.loads((FIXTURES / "bagel-7b-mot.ema.keys.json").read_text())
    model = {key: list(shape) for key, shape in release_shapes.items() if not key.startswith("vae.")}
    assert model == manifest


def test_7b_autoencoder_has_exactly_the_keys_and_shapes_of_ae_safetensors(release_shapes):
    manifest = json.loads((FIXTURES / "flux-ae.keys.json").read_text())
    vae = {
        key.removeprefix("vae."): list(shape)
        for key, shape in release_shapes.items()
        if key.startswith("vae.")
    }
    assert vae == manifest


@pytest.fixture
def saved(tiny_trunk, tmp_path) -> Path:
    tiny_trunk.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def run(trunk, pack):
    with torch.no_grad():
        return trunk(pack, generator=torch.Generator().manual_seed(0)).hidden_states


def test_tiny_checkpoint_round_trips_to_identical_outputs(tiny_trunk, tiny_config, saved, pack_of):
    assert sorted(p.name for p in saved.iterdir()) == [
        "ae.safetensors",
        "ema.safetensors",
        "llm_config.json",
        "pdgen_config.json",
        "vit_config.json",
    ]
    loaded = BagelTrunk.from_pretrained(saved)
    assert loaded.config == tiny_config
    for key, value in tiny_trunk.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    pack = pack_of([INSPECTED])
    assert torch.equal(run(loaded, pack), run(tiny_trunk, pack))
    assert not any(p.requires_grad for p in loaded.vae.parameters())


def test_load_converts_dtype_and_recomputes_fixed_tables(saved):
    path = saved / "ema.safetensors"
    tensors = load_file(path)
    tensors["latent_pos_embed.pos_embed"].zero_()  # a stale or edited table must not be trusted
    save_file(tensors, path)
    loaded = BagelTrunk.from_pretrained(saved, dtype=torch.bfloat16)
    assert loaded.vae2llm.weight.dtype == torch.bfloat16
    assert loaded.latent_pos_embed.pos_embed.dtype == torch.bfloat16
    expected = sincos_2d(loaded.config.llm.hidden_size, loaded.config.max_latent_size).to(torch.bfloat16)
    assert torch.equal(loaded.latent_pos_embed.pos_embed, expected)
    assert not loaded.language_model.model.rotary_emb.inv_freq.is_meta


def break_checkpoint(directory: Path) -> None:
    """Drops one key and narrows another, as a checkpoint of a different model size would."""
    path = directory / "ema.safetensors"
    tensors = load_file(path)
    del tensors["language_model.lm_head.weight"]
    tensors["vae2llm.weight"] = tensors["vae2llm.weight"][:, :32].contiguous()
    save_file(tensors, path)


def test_missing_and_mis_shaped_keys_give_one_readable_report(saved):
    break_checkpoint(saved)
    with pytest.raises(CheckpointError) as caught:
        BagelTrunk.from_pretrained(saved)
    message = str(caught.value)
    assert "2 key problem(s)" in message
    assert "missing (1):\n    ema.safetensors: language_model.lm_head.weight  expected [1024, 64]" in message
    assert (
        "mis-shaped (1):\n    ema.safetensors: vae2llm.weight  expected [64, 64], found [64, 32]" in message
    )
    assert "strict=False" in message


def test_non_strict_load_reinitialises_what_it_could_not_load(saved, pack_of, caplog):
    break_checkpoint(saved)
    loaded = BagelTrunk.from_pretrained(saved, strict=False)
    assert "2 key problem(s)" in caplog.text
    assert loaded.vae2llm.weight.shape == (64, 64) and not loaded.vae2llm.weight.is_meta
    assert not any(t.is_meta for t in loaded.state_dict().values())
    assert torch.isfinite(run(loaded, pack_of([INSPECTED]))).all()


def test_unexpected_autoencoder_key_is_reported_under_its_file(saved):
    path = saved / "ae.safetensors"
    save_file(load_file(path) | {"encoder.extra.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"unexpected \(1\):\n    ae.safetensors: encoder.extra.weight"):
        BagelTrunk.from_pretrained(saved)


def test_missing_config_file_is_named(saved):
    (saved / "vit_config.json").unlink()
    with pytest.raises(CheckpointError, match="no vit_config.json"):
        BagelTrunk.from_pretrained(saved)


def test_header_reader_reads_shapes_only(saved):
    shapes = read_safetensors_header(saved / "ae.safetensors")
    assert shapes["decoder.conv_in.weight"] == (32, 16, 3, 3)


def test_make_tiny_checkpoint_tool_writes_a_loadable_directory(tmp_path, capsys):
    load_tool("make_tiny_checkpoint").main(["--out", str(tmp_path / "tiny"), "--seed", "3"])
    assert "wrote tiny checkpoint" in capsys.readouterr().out
    assert BagelTrunk.from_pretrained(tmp_path / "tiny").config.name == "tiny"


def test_inspect_tool_prints_preset_shapes_as_json(capsys):
    assert load_tool("inspect_checkpoint").main(["--preset", "tiny", "--json"]) == 0
    shapes = json.loads(capsys.readouterr().out)
    assert shapes["vae2llm.weight"] == [64, 64]
    assert shapes["vae.decoder.conv_in.weight"] == [32, 16, 3, 3]


def test_inspect_tool_compares_a_directory(saved, capsys):
    inspect = load_tool("inspect_checkpoint")
    assert inspect.main(["--dir", str(saved)]) == 0
    assert "all keys and shapes match" in capsys.readouterr().out
    break_checkpoint(saved)
    assert inspect.main(["--dir", str(saved)]) == 1
    out = capsys.readouterr().out
    assert "missing (1)" in out and "mis-shaped (1)" in out
