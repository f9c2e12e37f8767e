"""Benchmark: audio-seconds generated per second, our decoding loop vs transformers' generate.

For each batch size it times, in the same run and with the same settings (classifier-free
guidance, top-k sampling, clip length, codec decoding included):
- ours: synthesis.decoding.StaticCacheDecoder (static KV cache, batched guidance; on a GPU the
  step is compiled with torch.compile(mode="reduce-overhead"), i.e. CUDA graphs);
- transformers' `generate` at the same batch size, and at batch 1;
and prints the memory-bandwidth bound for the same settings: every decoding step must read the
decoder's weights once plus the KV caches, so audio-s/s <= bandwidth x audio seconds / bytes read.

Sizes: `small` is musicgen-small's architecture (decoder 1024 x 24, T5-base width, EnCodec 32 kHz);
weights are random unless --model names a local folder (timing does not depend on weight values).
`tiny` is the test suite's random model. Default: small on a GPU, tiny on a CPU.

    python scripts/bench_synthesis.py                      # tiny on CPU / small on GPU
    python scripts/bench_synthesis.py --size small --batch-sizes 1,2 --seconds 1
    python scripts/bench_synthesis.py --json bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutput

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthesis.decoding import DecodingSettings, StaticCacheDecoder  # noqa: E402
from synthesis.models import (  # noqa: E402
    LoadedMusicgen,
    _quiet_transformers,
    build_tiny_musicgen,
    decode_audio_batch,
)

# Peak memory bandwidth of common GPUs (bytes/s, vendor figures), for the bound.
GPU_BANDWIDTH = {
    "H100 80GB HBM3": 3.35e12,
    "H100": 3.35e12,
    "H200": 4.8e12,
    "A100-SXM4-80GB": 2.04e12,
    "A100": 1.94e12,
    "L4": 0.30e12,
    "RTX 4090": 1.01e12,
    "A10G": 0.60e12,
    "T4": 0.32e12,
}


def build_small_random() -> torch.nn.Module:
    """musicgen-small's architecture with random weights."""
    _quiet_transformers()
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    text = T5Config(d_model=768, d_ff=3072, num_layers=1, num_heads=12, d_kv=64)  # width only
    codec = EncodecConfig(
        sampling_rate=32000,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        num_filters=64,
        hidden_size=128,
        codebook_size=2048,
        num_lstm_layers=2,
        normalize=False,
        use_causal_conv=False,
        chunk_length_s=None,
        overlap=None,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=2048,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        ffn_dim=4096,
        num_codebooks=4,
        pad_token_id=2048,
        bos_token_id=2048,
        decoder_start_token_id=2048,
        max_position_embeddings=2048,
    )
    config = MusicgenConfig(
        text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict()
    )
    model = MusicgenForConditionalGeneration(config)
    for key in ("pad_token_id", "decoder_start_token_id", "bos_token_id"):
        setattr(model.generation_config, key, 2048)
    return model.eval()


def load_model(size: str, model_path: str | None) -> torch.nn.Module:
    if model_path:
        from transformers import MusicgenForConditionalGeneration

        return MusicgenForConditionalGeneration.from_pretrained(model_path, local_files_only=True)
    return build_small_random() if size == "small" else build_tiny_musicgen("musicgen")


def cpu_bandwidth() -> float:
    """Measured copy bandwidth (bytes read + written per second), best of 5, 256 MiB."""
    source = torch.ones(64 * 1024 * 1024, dtype=torch.float32)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() * 4 / best


def device_bandwidth(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_BANDWIDTH.items():
            if key in name:
                return value, f"{name} (vendor peak)"
        return 2.0e12, f"{name} (unknown: assumed 2 TB/s)"
    return cpu_bandwidth(), f"{platform.processor() or 'CPU'} (measured copy)"


def bytes_read_per_clip_batch(model, batch: int, steps: int, cond_len: int, guided: bool) -> float:
    """Bytes a decoding run must read at least: decoder weights every step, plus KV caches."""
    decoder = model.decoder
    config = decoder.config
    element = next(decoder.parameters()).element_size()
    # Embedding tables are gathered (K rows per step), not read whole; everything else is read.
    embedding_params = sum(p.numel() for p in decoder.model.decoder.embed_tokens.parameters())
    weight_bytes = (sum(p.numel() for p in decoder.parameters()) - embedding_params) * element
    rows = batch * (2 if guided else 1)
    per_position = config.num_hidden_layers * 2 * config.hidden_size * element  # K and V
    self_kv = rows * per_position * steps * (steps + 1) / 2  # the cache grows one position a step
    cross_kv = rows * per_position * cond_len * steps
    return weight_bytes * steps + self_kv + cross_kv


@dataclass
class Row:
    batch: int
    ours_audio_s_per_s: float
    stock_same_batch_audio_s_per_s: float
    stock_batch1_audio_s_per_s: float
    speedup_vs_same_batch: float
    speedup_vs_batch1: float
    bandwidth_bound_audio_s_per_s: float
    fraction_of_bound: float


def timed(function) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", "small"], default=None)
    parser.add_argument("--model", default=None, help="local musicgen folder (real weights)")
    parser.add_argument("--batch-sizes", default=None, help="comma separated, e.g. 1,4,16")
    parser.add_argument("--seconds", type=float, default=None, help="clip length")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--top-k", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto"
    )
    parser.add_argument("--no-compile", action="store_true", help="GPU: skip torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    arguments = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    size = arguments.size or ("small" if device.type == "cuda" else "tiny")
    gpu = device.type == "cuda"
    batch_sizes = [
        int(value)
        for value in (arguments.batch_sizes or ("1,4,16,64" if gpu else "1,4,16")).split(",")
    ]
    seconds = arguments.seconds or (10.0 if gpu else (4.0 if size == "tiny" else 1.0))
    dtype = {
        "auto": (torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float16)
        if gpu
        else torch.float32,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }[arguments.dtype]

    torch.manual_seed(0)
    model = load_model(size, arguments.model).to(device)
    model.decoder.to(dtype)
    model.text_encoder.to(dtype)
    model.enc_to_dec_proj.to(dtype)
    loaded = LoadedMusicgen(model, "musicgen", size, None, "", arguments.model is None)
    frames = loaded.frames_for(seconds)
    if arguments.guidance > 1 and frames % 2:
        # generate() with our own guidance rows takes 2B as its batch size and reshapes the codes
        # to (2B, K, -1) at the end, which fails for an odd frame count: use an even one.
        frames += 1
        seconds = frames / loaded.frame_rate
    codebooks = model.decoder.config.num_codebooks
    start_id = model.generation_config.decoder_start_token_id
    cond_len = 12
    text_width = model.config.text_encoder.hidden_size
    guided = arguments.guidance > 1
    settings = DecodingSettings(
        arguments.guidance, True, 1.0, arguments.top_k, False if arguments.no_compile else None
    )
    loop = StaticCacheDecoder(model.decoder, settings)
    bandwidth, bandwidth_source = device_bandwidth(device)

    def conditioning(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        states = torch.randn(batch, cond_len, text_width, device=device, dtype=dtype)
        return states, torch.ones(batch, cond_len, dtype=torch.long, device=device)

    def run_ours(batch: int, clip_frames: int = frames) -> None:
        states, mask = conditioning(batch)
        with torch.no_grad():
            projected = model.enc_to_dec_proj(states)
        generators = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
        codes = loop.generate_codes(projected, mask, [clip_frames] * batch, generators)
        decode_audio_batch(loaded, codes)

    def run_stock(batch: int) -> None:
        states, mask = conditioning(batch)
        if guided:
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=mask,
            decoder_input_ids=torch.full((batch * codebooks, 1), start_id, device=device),
            do_sample=True,
            top_k=arguments.top_k,
            guidance_scale=arguments.guidance,
            max_new_tokens=frames + codebooks - 1,
        )

    print(
        f"device: {device} {bandwidth_source}; size: {size}; dtype: {dtype}; clip {seconds:g} s "
        f"({frames} frames, {frames + codebooks - 1} steps); guidance {arguments.guidance}; "
        f"top-k {arguments.top_k}; threads {torch.get_num_threads()}; "
        f"compiled: {loop.compiled}",
        flush=True,
    )
    # Warm-up: kernels, allocator, and torch.compile's capture on a GPU.
    run_ours(batch_sizes[0], min(frames, 20))
    run_stock(1)
    rows = []
    steps = frames + codebooks - 1
    for batch in batch_sizes:
        if gpu:
            run_ours(batch)  # compile/capture for this shape outside the timing
        # Round-robin repeats, so that load from anything else on the machine hits all three
        # measurements alike; the fastest of the repeats (interference only ever slows a run
        # down). At batch 1, "same batch" and "batch 1" are one timing.
        timings: dict[str, list[float]] = {"ours": [], "stock": [], "stock1": []}
        for _ in range(arguments.repeats):
            timings["ours"].append(timed(lambda batch=batch: run_ours(batch)))
            timings["stock"].append(timed(lambda batch=batch: run_stock(batch)))
            if batch != 1:
                timings["stock1"].append(timed(lambda: run_stock(1)))
        ours = batch * seconds / min(timings["ours"])
        stock = batch * seconds / min(timings["stock"])
        stock_batch1 = seconds / min(timings["stock1" if batch != 1 else "stock"])
        bound = (
            batch
            * seconds
            * bandwidth
            / bytes_read_per_clip_batch(model, batch, steps, cond_len, guided)
        )
        rows.append(
            Row(
                batch,
                ours,
                stock,
                stock_batch1,
                ours / stock,
                ours / stock_batch1,
                bound,
                ours / bound,
            )
        )
        print(
            f"batch {batch:3d}: ours {ours:8.2f} audio-s/s | generate same batch {stock:8.2f} "
            f"(x{ours / stock:.2f}) | generate batch 1 {stock_batch1:7.2f} "
            f"(x{ours / stock_batch1:.2f}) | bandwidth bound {bound:10.1f} "
            f"({100 * ours / bound:.1f}% of it)",
            flush=True,
        )
    if arguments.json:
        report = {
            "device": str(device),
            "bandwidth_bytes_per_s": bandwidth,
            "bandwidth_source": bandwidth_source,
            "size": size,
            "dtype": str(dtype),
            "seconds": seconds,
            "guidance": arguments.guidance,
            "threads": torch.get_num_threads(),
            "rows": [asdict(row) for row in rows],
        }
        arguments.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
