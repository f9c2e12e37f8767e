"""The vit_adapter: teacher-forcing training with MusicGen frozen, checkpoints and the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from synthesis.__main__ import main
from synthesis.adapter import AdapterShape, VisualAdapter, load_adapter
from synthesis.models import ByteTokenizer, LoadedMusicgen, build_tiny_musicgen, encode_audio_codes
from synthesis.training.adapter import (
    TrainingExample,
    delayed_inputs_and_targets,
    teacher_forcing_loss,
    train_adapter,
)

# Every test here builds or runs a model: left out of `make test-fast`.
pytestmark = pytest.mark.model


def test_delay_pattern_of_targets():
    codes = torch.arange(6).view(1, 2, 3)  # K=2 codebooks, F=3 frames
    inputs, targets = delayed_inputs_and_targets(codes, start_id=9, pad_id=8)
    assert targets.tolist() == [[[0, 1, 2, 8], [8, 3, 4, 5]]]
    assert inputs.tolist() == [[[9, 0, 1, 2], [9, 8, 3, 4]]]


def toy_examples(musicgen: LoadedMusicgen, count: int = 4) -> list[TrainingExample]:
    rate = musicgen.sampling_rate
    time = np.arange(rate) / rate
    rng = np.random.default_rng(0)
    examples = []
    for index in range(count):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 150 * index) * time).astype(np.float32)
        codes = encode_audio_codes(musicgen, torch.from_numpy(tone)[None, None])[0]
        embeddings = rng.standard_normal((4, 32)).astype(np.float32)
        examples.append(TrainingExample(f"toy{index}", embeddings, codes))
    return examples


@pytest.mark.slow  # a model run (training, or the pipeline three times)
def test_training_loss_decreases_and_checkpoints_round_trip(tmp_path):
    model = build_tiny_musicgen("musicgen")
    musicgen = LoadedMusicgen(model, "musicgen", "tiny", ByteTokenizer(), "0" * 64, True)
    frozen_before = {name: p.clone() for name, p in model.decoder.named_parameters()}
    torch.manual_seed(0)
    adapter = VisualAdapter(AdapterShape(32, musicgen.decoder_width, 4, 32))
    losses = train_adapter(
        musicgen,
        adapter,
        toy_examples(musicgen),
        tmp_path,
        epochs=12,
        learning_rate=3e-2,
        batch_size=2,
        seed=0,
        metadata={"note": "toy"},
    )
    # a random-weight decoder attends weakly to its conditioning: small but steady progress
    assert losses[-1] < losses[0] - 0.005, losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    for name, parameter in model.decoder.named_parameters():
        assert torch.equal(parameter, frozen_before[name]), (
            f"{name} changed: MusicGen must stay frozen"
        )
    log = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == list(range(1, 13))
    assert (tmp_path / "adapter-epoch012.safetensors").exists()
    restored, sidecar = load_adapter(tmp_path / "adapter.safetensors")
    assert sidecar["note"] == "toy"
    probe = torch.randn(1, 4, 32)
    torch.testing.assert_close(restored(probe), adapter(probe))


def test_train_adapter_cli_then_generate_with_the_checkpoint(video_folder, tmp_path):
    from synthesis.config import load_config
    from synthesis.pipeline import generate_set

    checkpoints = tmp_path / "checkpoints"
    code = main(
        [
            "train-adapter",
            "--videos",
            str(video_folder),
            "--out",
            str(checkpoints),
            "--config",
            "tiny",
            "--epochs",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert len((checkpoints / "loss_log.jsonl").read_text().splitlines()) == 2
    config = load_config("tiny")
    config.conditions = ["reference", "vit_adapter"]
    config.video = dataclasses.replace(config.video, max_segments_per_source=1)
    config.adapter = dataclasses.replace(
        config.adapter, checkpoint=str(checkpoints / "adapter.safetensors"), allow_untrained=False
    )
    summary = generate_set(video_folder, tmp_path / "set", config, "cpu", log=lambda _: None)
    assert summary.manifest_problems == [] and summary.clips_failed == []
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    adapters = {c["provenance"]["adapter"] for c in manifest["clips"] if "provenance" in c}
    assert len(adapters) == 1 and adapters.pop().startswith("adapter.safetensors sha256:")


def test_teacher_forcing_reaches_the_adapter_for_both_families():
    for family in ("musicgen", "melody"):
        model = build_tiny_musicgen(family)
        musicgen = LoadedMusicgen(model, family, "tiny", ByteTokenizer(), "0" * 64, True)
        adapter = VisualAdapter(AdapterShape(32, musicgen.decoder_width, 4, 32))
        codes = torch.randint(0, 64, (2, 4, 10))
        loss = teacher_forcing_loss(musicgen, adapter(torch.randn(2, 6, 32)), codes)
        assert loss.item() == pytest.approx(np.log(64), abs=0.5)  # near uniform when untrained
        loss.backward()
        assert adapter.mlp[0].weight.grad.abs().sum() > 0, family
