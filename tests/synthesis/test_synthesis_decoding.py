"""Our static-cache decoding loop against transformers' generate, and conditioning sensitivity."""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from synthesis.decoding import DecodingSettings, StaticCacheDecoder
from synthesis.models import (
    ByteTokenizer,
    LoadedMusicgen,
    build_tiny_musicgen,
    null_conditioning,
    text_conditioning,
)

# Every test here builds or runs a model: left out of `make test-fast`.
pytestmark = pytest.mark.model

CODEBOOKS = 4
START = 64  # the tiny decoder's vocab_size: its start/pad token


@pytest.fixture(scope="module")
def musicgen_model():
    return build_tiny_musicgen("musicgen")


@pytest.fixture(scope="module")
def melody_model():
    return build_tiny_musicgen("melody")


@contextlib.contextmanager
def captured_codes(model):
    """generate() returns audio; capture the codes it hands to the codec."""
    codec = model.audio_encoder
    original = codec.decode
    captured = {}

    def decode(codes, *args, **kwargs):
        captured["codes"] = codes
        return original(codes, *args, **kwargs)

    codec.decode = decode
    try:
        yield captured
    finally:
        codec.decode = original


def generate_reference_codes(model, batch, frames, guidance, **conditioning):
    # With our own encoder states and guidance, generate wants the 2B rows from us, and its
    # batch size then comes out as 2B: give it B rows of start tokens explicitly and fold the
    # result back to B (the flat order is B x K x frames either way).
    with captured_codes(model) as captured:
        model.generate(
            decoder_input_ids=torch.full((batch * CODEBOOKS, 1), START),
            do_sample=False,
            guidance_scale=guidance,
            max_new_tokens=frames + CODEBOOKS - 1,
            **conditioning,
        )
    return captured["codes"][0].reshape(batch, CODEBOOKS, frames)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_musicgen_loop_matches_generate_token_for_token(musicgen_model, guidance):
    torch.manual_seed(1)
    text_states = torch.randn(2, 5, 24)  # T5 width: generate applies enc_to_dec_proj
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, 3:] = 0  # a padded row
    frames = 24
    if guidance > 1:
        states_in = torch.cat([text_states, torch.zeros_like(text_states)])
        mask_in = torch.cat([mask, torch.zeros_like(mask)])
    else:
        states_in, mask_in = text_states, mask
    expected = generate_reference_codes(
        musicgen_model,
        2,
        frames,
        guidance,
        encoder_outputs=BaseModelOutput(last_hidden_state=states_in),
        attention_mask=mask_in,
    )
    with torch.no_grad():
        projected = musicgen_model.enc_to_dec_proj(text_states) * mask[..., None]
    loop = StaticCacheDecoder(
        musicgen_model.decoder, DecodingSettings(guidance_scale=guidance, do_sample=False)
    )
    ours = torch.stack(loop.generate_codes(projected, mask, [frames, frames]))
    assert torch.equal(ours, expected)


def test_rows_of_different_lengths_match_their_own_runs(musicgen_model):
    torch.manual_seed(2)
    states = torch.randn(2, 4, 24)
    mask = torch.ones(2, 4, dtype=torch.long)
    with torch.no_grad():
        projected = musicgen_model.enc_to_dec_proj(states)
    loop = StaticCacheDecoder(musicgen_model.decoder, DecodingSettings(3.0, do_sample=False))
    mixed = loop.generate_codes(projected, mask, [26, 14])
    expected_short = generate_reference_codes(
        musicgen_model,
        1,
        14,
        3.0,
        encoder_outputs=BaseModelOutput(
            last_hidden_state=torch.cat([states[1:], torch.zeros_like(states[1:])])
        ),
        attention_mask=torch.cat([mask[1:], torch.zeros_like(mask[1:])]),
    )
    assert mixed[0].shape == (CODEBOOKS, 26)
    assert torch.equal(mixed[1], expected_short[0])


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_melody_loop_matches_generate_token_for_token(melody_model, guidance):
    loaded = LoadedMusicgen(melody_model, "melody", "tiny", ByteTokenizer(), "", True)
    conditioning = text_conditioning(loaded, ["calm violin", "fast drums"])
    states = conditioning.states
    if guidance > 1:
        states = torch.cat([conditioning.states, conditioning.null_states])
    frames = 20
    expected = generate_reference_codes(
        melody_model, 2, frames, guidance, encoder_hidden_states=states
    )
    loop = StaticCacheDecoder(melody_model.decoder, DecodingSettings(guidance, do_sample=False))
    ours = loop.generate_codes(
        conditioning.states,
        conditioning.mask,
        [frames, frames],
        unconditional=(conditioning.null_states, conditioning.null_mask),
    )
    assert torch.equal(torch.stack(ours), expected)


def test_sampling_is_reproducible_per_row_seed(musicgen_model):
    torch.manual_seed(3)
    states = musicgen_model.enc_to_dec_proj(torch.randn(3, 4, 24)).detach()
    mask = torch.ones(3, 4, dtype=torch.long)
    loop = StaticCacheDecoder(musicgen_model.decoder, DecodingSettings(3.0, True, 1.0, 20))

    def run(seeds, rows):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        return loop.generate_codes(states[rows], mask[rows], [12] * len(rows), generators)

    first = run([7, 8, 9], [0, 1, 2])
    again = run([7, 8, 9], [0, 1, 2])
    alone = run([8], [1])  # the same clip in a batch of its own
    other_seed = run([70, 8, 9], [0, 1, 2])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(first[1], alone[0])
    assert not torch.equal(first[0], other_seed[0])


def first_step_logits(model, family, states, mask):
    """Logits for the first token through transformers' forward and through our loop."""
    start = torch.full((states.shape[0] * CODEBOOKS, 1), START)
    with torch.no_grad():
        output = model.decoder(
            input_ids=start, encoder_hidden_states=states, encoder_attention_mask=mask
        )
        stock = output.logits[:, -1]
        loop = StaticCacheDecoder(model.decoder, DecodingSettings(1.0, do_sample=False))
        loop._prepare(states, mask, CODEBOOKS + 1)
        prefix = states.shape[1] if family == "melody" else 0
        ours = loop._step(torch.full((states.shape[0], CODEBOOKS), START), torch.tensor(prefix))
    return stock.reshape(states.shape[0], CODEBOOKS, -1), ours


@pytest.mark.parametrize("family", ["musicgen", "melody"])
def test_different_conditioning_gives_different_logits(family, musicgen_model, melody_model):
    # A public issue reported melody's conditioning silently ignored in some transformers
    # versions: keep checking that conditioning reaches the logits, for every family.
    model = musicgen_model if family == "musicgen" else melody_model
    torch.manual_seed(4)
    width = model.config.decoder.hidden_size
    first = torch.randn(1, 6, width)
    second = torch.randn(1, 6, width)
    mask = torch.ones(1, 6, dtype=torch.long)
    stock_a, ours_a = first_step_logits(model, family, first, mask)
    stock_b, ours_b = first_step_logits(model, family, second, mask)
    assert (stock_a - stock_b).abs().max() > 1e-3
    assert (ours_a - ours_b).abs().max() > 1e-3
    torch.testing.assert_close(ours_a, stock_a, rtol=1e-4, atol=1e-5)
    null_states, null_mask = null_conditioning(family, first)
    _, ours_null = first_step_logits(model, family, null_states, null_mask)
    assert (ours_a - ours_null).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["musicgen", "melody"])
def test_text_prompts_change_logits(family, musicgen_model, melody_model):
    model = musicgen_model if family == "musicgen" else melody_model
    loaded = LoadedMusicgen(model, family, "tiny", ByteTokenizer(), "", True)
    calm = text_conditioning(loaded, ["calm slow cello"])
    loud = text_conditioning(loaded, ["loud fast drums!!"])
    _, ours_calm = first_step_logits(model, family, calm.states, calm.mask)
    _, ours_loud = first_step_logits(model, family, loud.states, loud.mask)
    # random init (std 0.02) keeps the effect small, but it must be there
    assert (ours_calm - ours_loud).abs().max() > 1e-5


@pytest.mark.slow
def test_compiled_step_matches_the_plain_loop(musicgen_model):
    # On a GPU the step is compiled by default (CUDA graphs); here torch.compile runs on the CPU
    # (inductor, no CUDA graphs), which at least checks the compiled graph token for token.
    torch.manual_seed(5)
    states = musicgen_model.enc_to_dec_proj(torch.randn(2, 5, 24)).detach()
    mask = torch.ones(2, 5, dtype=torch.long)
    plain = StaticCacheDecoder(musicgen_model.decoder, DecodingSettings(3.0, False, compile=False))
    compiled = StaticCacheDecoder(
        musicgen_model.decoder, DecodingSettings(3.0, False, compile=True)
    )
    expected = plain.generate_codes(states, mask, [20, 20])
    for _ in range(2):  # the second run reuses the static buffers in place
        ours = compiled.generate_codes(states, mask, [20, 20])
        assert all(torch.equal(a, b) for a, b in zip(expected, ours, strict=True))


def test_benchmark_script_runs_and_reports(tmp_path, capsys):
    import importlib.util
    import json
    import pathlib
    import sys

    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_synthesis.py"
    spec = importlib.util.spec_from_file_location("bench_synthesis", script)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_synthesis"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    report_path = tmp_path / "bench.json"
    arguments = ["--size", "tiny", "--batch-sizes", "2", "--seconds", "0.5", "--repeats", "1"]
    assert bench.main([*arguments, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    (row,) = report["rows"]
    assert row["batch"] == 2
    for key in (
        "ours_audio_s_per_s",
        "stock_same_batch_audio_s_per_s",
        "stock_batch1_audio_s_per_s",
        "bandwidth_bound_audio_s_per_s",
    ):
        assert row[key] > 0
    assert "audio-s/s" in capsys.readouterr().out
