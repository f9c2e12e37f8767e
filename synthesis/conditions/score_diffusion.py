"""`score_diffusion`: the segment's score slice through Magenta's spectrogram diffusion model.

diffusers ships it as `SpectrogramDiffusionPipeline` (deprecated, under
`diffusers.pipelines.deprecated.spectrogram_diffusion`; its MIDI tokenizer needs `note-seq`):
a T5 notes encoder, a continuous encoder of the previous chunk's spectrogram, and a FiLM T5
decoder denoising 256 mel frames (5.12 s at 16 kHz, hop 320) per chunk, then Magenta's MelGAN,
an ONNX model, turns the spectrogram into audio. We run the pipeline's own loop (`output_type=
"mel"`: each chunk conditioned on the previous chunk's prediction, as it does for a whole song)
and the MelGAN through onnxruntime, which is what diffusers' `OnnxRuntimeModel` wraps (that
wrapper is deprecated and removed in diffusers 0.43).

The slice is tokenised as diffusers' `MidiProcessor` does, except that the chunks cover the
segment's length rather than stopping at the last note's end, and the audio is cut to the
segment. Weights load offline from a local folder or the Hugging Face cache
(`google/music-spectrogram-diffusion`: `notes_encoder/`, `continuous_encoder/`, `decoder/`,
`scheduler/`, `melgan/model.onnx`); `tiny` builds random-weight stand-ins of every part.
"""

from __future__ import annotations

import hashlib
import math
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from synthesis.conditions.base import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    register,
)
from synthesis.models import (
    ModelNotFoundError,
    _quiet_transformers,
    from_pretrained_offline,
    hf_cache_dir,
    missing_weights,
    one_cpu_thread,
    resolve_dtype,
    state_dict_sha256,
)
from synthesis.sections import MODEL_PATH, ConfigError, ModelSpec, Section

SAMPLE_RATE = 16000  # the model's and its MelGAN's
HOP = 320
CHUNK_FRAMES = 256  # diffusers' TARGET_FEATURE_LENGTH: 5.12 s
MEL_BINS = 128
MELGAN_FILE = "melgan/model.onnx"


@dataclass
class ScoreDiffusionConfig(Section):
    """The `score_diffusion` section: Magenta's MIDI-to-spectrogram diffusion (diffusers)."""

    # local folder or cached hub id
    path: str | None = field(default="google/music-spectrogram-diffusion", metadata=MODEL_PATH)
    tiny: dict[str, Any] | None = None  # random-weight stand-in built from these overrides
    steps: int = 100  # denoising steps per 5.12 s chunk
    dtype: str = "auto"

    def check(self, where: str) -> None:
        if self.steps < 1:
            raise ConfigError(f"{where}.steps must be at least 1")


TINY_DIFFUSION_DEFAULTS: dict[str, Any] = {
    "d_model": 16,
    "num_layers": 1,
    "num_heads": 2,
    "d_kv": 8,
    "d_ff": 32,
    "seed": 0,
}


def _extended_attention_mask(
    self: Any,
    attention_mask: torch.Tensor,
    input_shape: Any = None,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """transformers 4's `ModuleUtilsMixin.get_extended_attention_mask`, encoder case.

    diffusers' two spectrogram encoders call it on themselves; transformers 5 removed it from
    the mixin they inherit, so they fail with an AttributeError. A (B, L) keep-mask becomes the
    additive (B, 1, 1, L) mask (0 to attend, the dtype's minimum to ignore) that transformers 5's
    T5 attention adds to its scores, exactly what the removed method returned for an encoder.
    """
    dtype = dtype or next(self.parameters()).dtype
    extended = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - extended) * torch.finfo(dtype).min


def _import_diffusion() -> Any:
    """The spectrogram diffusion module of diffusers, with a clear error when it cannot load."""
    try:
        from diffusers.pipelines.deprecated import spectrogram_diffusion
        from diffusers.pipelines.deprecated.spectrogram_diffusion import midi_utils
    except ImportError as error:
        raise ModelNotFoundError(
            "score_diffusion needs diffusers (< 0.43, which still ships the spectrogram "
            "diffusion pipeline) and note-seq: pip install -e '.[synthesis]'. "
            f"Original error: {error}"
        ) from error
    for encoder in (
        spectrogram_diffusion.SpectrogramNotesEncoder,
        spectrogram_diffusion.SpectrogramContEncoder,
    ):
        if not hasattr(encoder, "get_extended_attention_mask"):
            encoder.get_extended_attention_mask = _extended_attention_mask
    return spectrogram_diffusion, midi_utils


def tokenize_slice(midi: bytes, seconds: float) -> list[list[int]]:
    """A slice's MIDI -> one token list per 5.12 s chunk, enough chunks to cover `seconds`.

    diffusers' `MidiProcessor.__call__`, step for step, except the length: it stops at the last
    note's end, which would leave a segment whose notes end early without audio at its end.
    """
    import note_seq

    _, midi_utils = _import_diffusion()
    processor = midi_utils.MidiProcessor()
    notes = note_seq.apply_sustain_control_changes(note_seq.midi_to_note_sequence(midi))
    for note in notes.notes:
        if not note.is_drum:
            note.program = midi_utils.program_to_slakh_program(note.program)
    seconds = max(float(notes.total_time), seconds)
    _, frame_times = midi_utils.audio_to_frames(
        np.zeros(int(round(seconds * SAMPLE_RATE))), HOP, SAMPLE_RATE // HOP
    )
    times, values = midi_utils.note_sequence_to_onsets_and_offsets_and_programs(notes)
    events = midi_utils.encode_and_index_events(
        state=midi_utils.NoteEncodingState(),
        event_times=times,
        event_values=values,
        frame_times=frame_times,
        codec=processor.codec,
        encode_event_fn=midi_utils.note_event_data_to_events,
        encoding_state_to_events_fn=midi_utils.note_encoding_state_to_events,
    )
    chains = [
        midi_utils.note_representation_processor_chain(
            event, processor.codec, processor.note_representation_config
        )
        for event in events
    ]
    return [processor.tokenizer.encode(chain["inputs"]) for chain in chains]


def chunks_for(seconds: float) -> int:
    """How many 5.12 s chunks a segment of `seconds` needs (what `tokenize_slice` makes)."""
    frames = int(round(seconds * SAMPLE_RATE)) // HOP + 1  # audio_to_frames pads a frame
    return math.ceil(frames / CHUNK_FRAMES)


def tiny_melgan_onnx(seed: int = 0) -> bytes:
    """A random-weight stand-in for Magenta's MelGAN as an ONNX graph with its interface.

    `input_features` (1, frames, 128) -> audio (1, frames x 320): a transposed convolution
    that upsamples each mel frame to 320 samples, then tanh. Built with onnx's helpers, so the
    tiny configuration runs the real loading and inference path (onnxruntime).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((MEL_BINS, 1, HOP)) / np.sqrt(MEL_BINS)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["input_features"], ["channels_first"], perm=[0, 2, 1]),
        helper.make_node(
            "ConvTranspose", ["channels_first", "weight"], ["upsampled"], strides=[HOP]
        ),
        helper.make_node("Tanh", ["upsampled"], ["bounded"]),
        helper.make_node("Flatten", ["bounded"], ["audio"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_melgan",
        [helper.make_tensor_value_info("input_features", TensorProto.FLOAT, [1, None, MEL_BINS])],
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, None])],
        initializer=[numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime releases of the last few years
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_tiny_pipeline(overrides: dict[str, Any]) -> Any:
    """A random-weight SpectrogramDiffusionPipeline (no MelGAN) of the real one's structure."""
    spectrogram_diffusion, midi_utils = _import_diffusion()
    from diffusers import DDPMScheduler, T5FilmDecoder

    settings = {**TINY_DIFFUSION_DEFAULTS, **overrides}
    torch.manual_seed(settings["seed"])
    sizes = {key: settings[key] for key in ("d_model", "num_layers", "num_heads", "d_kv", "d_ff")}
    vocabulary = midi_utils.MidiProcessor().codec.num_classes + 3  # + PAD, EOS, UNK
    notes_encoder = spectrogram_diffusion.SpectrogramNotesEncoder(
        max_length=midi_utils.INPUT_FEATURE_LENGTH,
        vocab_size=vocabulary,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        **sizes,
    )
    continuous_encoder = spectrogram_diffusion.SpectrogramContEncoder(
        input_dims=MEL_BINS,
        targets_context_length=CHUNK_FRAMES,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        **sizes,
    )
    decoder = T5FilmDecoder(
        input_dims=MEL_BINS, targets_length=CHUNK_FRAMES, dropout_rate=0.0, **sizes
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="fixed_large"
    )
    return spectrogram_diffusion.SpectrogramDiffusionPipeline(
        notes_encoder, continuous_encoder, decoder, scheduler, melgan=None
    )


def _melgan_path(path: str) -> pathlib.Path:
    local = pathlib.Path(path) / MELGAN_FILE
    if local.is_file():
        return local
    from huggingface_hub import hf_hub_download

    try:
        return pathlib.Path(hf_hub_download(path, MELGAN_FILE, local_files_only=True))
    except Exception as error:  # not a repo id, or not in the cache
        raise ModelNotFoundError(
            f"cannot load the MelGAN {MELGAN_FILE} of {path!r} offline. Looked for "
            f"{local.resolve()} and for a cached copy under {hf_cache_dir()} (set HF_HOME or "
            f"HF_HUB_CACHE to move it). Download it on a machine with network access "
            f"(`hf download {path}`) and copy it there. Original error: {error}"
        ) from error


@dataclass
class LoadedDiffusion:
    pipeline: Any  # SpectrogramDiffusionPipeline without its melgan
    melgan: Any  # onnxruntime.InferenceSession
    name: str
    weights_sha256: str  # over the three torch parts' tensors and the MelGAN's bytes
    melgan_sha256: str


def load_diffusion(settings: ScoreDiffusionConfig, device: torch.device) -> LoadedDiffusion:
    """The pipeline and its MelGAN, offline; a ModelNotFoundError names both places looked in."""
    import onnxruntime
    from diffusers.utils import logging as diffusers_logging

    _quiet_transformers()  # T5 blocks used outside a transformers model log about attention
    diffusers_logging.set_verbosity_error()
    spectrogram_diffusion, _ = _import_diffusion()
    if settings.tiny is not None:
        pipeline = build_tiny_pipeline(dict(settings.tiny))
        melgan_bytes = tiny_melgan_onnx(int(settings.tiny.get("seed", 0)))
        name = "tiny-random-spectrogram-diffusion"
    else:
        if not settings.path:
            raise ModelNotFoundError("score_diffusion.path is empty: name a local folder or hub id")
        pipeline_class = spectrogram_diffusion.SpectrogramDiffusionPipeline
        try:
            pipeline = from_pretrained_offline(pipeline_class, settings.path, melgan=None)
        except ValueError as error:  # diffusers' word for a path that is not there
            raise missing_weights(pipeline_class.__name__, settings.path, error) from error
        melgan_bytes = _melgan_path(settings.path).read_bytes()
        name = settings.path
    digest = hashlib.sha256()
    for part in (pipeline.notes_encoder, pipeline.continuous_encoder, pipeline.decoder):
        digest.update(state_dict_sha256(part).encode())
    melgan_sha256 = hashlib.sha256(melgan_bytes).hexdigest()
    digest.update(melgan_sha256.encode())
    spec = ModelSpec("score_diffusion", settings.path, settings.tiny, settings.dtype)
    dtype = resolve_dtype(spec, device)
    pipeline.to(device)
    if dtype != torch.float32:  # (casting to float32, which they are, only logs warnings)
        pipeline.to(dtype)
    pipeline.set_progress_bar_config(disable=True)
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    # one thread on the CPU: the same samples whatever the machine's core count
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    melgan = onnxruntime.InferenceSession(melgan_bytes, options, providers=providers)
    return LoadedDiffusion(pipeline, melgan, name, digest.hexdigest(), melgan_sha256)


def synthesize(
    model: LoadedDiffusion, tokens: list[list[int]], steps: int, seed: int, seconds: float
) -> np.ndarray:
    """Token chunks -> (1, samples) float32 audio at 16 kHz, cut to `seconds`."""
    device = model.pipeline.device
    generator = torch.Generator(device=device).manual_seed(seed)
    with one_cpu_thread(device):  # the same bytes whatever the run's thread count
        mel = model.pipeline(
            tokens, generator=generator, num_inference_steps=steps, output_type="mel"
        ).audios
        audio = model.melgan.run(None, {"input_features": np.asarray(mel, dtype=np.float32)})[0]
    audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    samples = int(round(seconds * SAMPLE_RATE))
    if audio.shape[1] < samples:
        raise ConditionSkipped(
            f"the diffusion model made {audio.shape[1] / SAMPLE_RATE:.2f} s for a "
            f"{seconds:g} s segment"
        )
    return audio[:, :samples]


@register
class ScoreDiffusion(Condition):
    name = "score_diffusion"
    needs_score = True
    sections = {"score_diffusion": ScoreDiffusionConfig}

    def __init__(self, setup: RunSetup) -> None:
        super().__init__(setup)
        self.settings = setup.config.score_diffusion
        self.model = load_diffusion(self.settings, setup.device)

    def checkpoints(self) -> dict[str, str | None]:
        return {"score_diffusion": f"{self.model.name} sha256:{self.model.weights_sha256}"}

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        if segment.score is None:  # segment_problem drops these; kept for direct calls
            raise ConditionSkipped(f"{segment.id} has no score")
        tokens = tokenize_slice(segment.score.midi_bytes(), segment.duration)
        seed = self.setup.clip_seed(f"{segment.id}.{self.name}")
        audio = synthesize(self.model, tokens, self.settings.steps, seed, segment.duration)
        return ClipPlan(
            audio=audio,
            audio_rate=SAMPLE_RATE,
            provenance={
                "model": self.model.name,
                "model_family": "spectrogram_diffusion",
                "weights_sha256": self.model.weights_sha256,
                "melgan_sha256": self.model.melgan_sha256,
                "diffusion_steps": self.settings.steps,
                "chunks": len(tokens),
                "seed": seed,
                "encoder": None,
                "guidance": None,
                "prompt": None,
                "adapter": None,
                **segment.score.provenance(),
            },
        )
