"""`gan`: the GAN baseline, visual embeddings + noise -> EnCodec latents -> the frozen codec.

Makes its own audio rather than going through MusicGen's language model; the pipeline finishes
it with the same chain as every other clip. The noise seed is the clip's seed (as for MusicGen's
clips), so a clip does not depend on the order of the run. See synthesis/gan.py.
"""

from __future__ import annotations

import pathlib
from typing import Any

from synthesis.conditions.base import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    register,
)
from synthesis.gan import (
    GanSynthesizer,
    check_generator_fits,
    codec_weights_sha256,
    freeze,
    gan_shape,
    load_generator,
    untrained_generator,
)
from synthesis.models import state_dict_sha256
from synthesis.video import file_sha256


def load_gan_for_run(setup: RunSetup) -> tuple[GanSynthesizer | None, str]:
    """(the generator with the frozen codec, why absent).

    A configured checkpoint that is missing or was made for another encoder or codec stops the
    run with a GanCheckpointError (a ConfigError) naming what is wrong.
    """
    config, encoder, musicgen = setup.config, setup.encoder, setup.musicgen
    expected = gan_shape(encoder.embedding_size, musicgen, config.gan)
    codec_sha = codec_weights_sha256(musicgen)
    freeze(musicgen.model)
    provenance: dict[str, Any] = {
        "model": musicgen.name,
        "model_family": musicgen.family,
        "weights_sha256": musicgen.weights_sha256,
        "codec": f"EnCodec of {musicgen.name} (frozen decoder, continuous latents)",
        "codec_weights_sha256": codec_sha,
        "encoder": encoder.name,
        "encoder_weights_sha256": encoder.weights_sha256,
        "guidance": None,
        "prompt": None,
        "adapter": None,
        "code_version": setup.code_version,
        "decoder": "frozen EnCodec decoder on generated continuous latents (synthesis.gan)",
    }
    if config.gan.checkpoint:
        path = pathlib.Path(config.gan.checkpoint)
        generator, sidecar = load_generator(path)
        check_generator_fits(generator.shape, expected, sidecar, codec_sha, str(path))
        checkpoint_sha = file_sha256(path)
        label = f"{path.name} sha256:{checkpoint_sha}"
        # the folder's name only: older sidecars hold the training machine's path
        trained_on = pathlib.PurePath(sidecar["videos"]).name if sidecar.get("videos") else None
        provenance["gan"] = {
            "checkpoint": path.name,
            "checkpoint_sha256": checkpoint_sha,
            "steps": sidecar.get("steps"),
            "seed": sidecar.get("seed"),
            "training_set": {
                "videos": trained_on,
                "segments": len(sidecar.get("training_segments", [])),
                "segments_sha256": sidecar.get("training_set_sha256"),
            },
        }
    elif config.gan.allow_untrained:
        generator = untrained_generator(expected, config.generation.seed)
        label = f"untrained random init (seed {config.generation.seed}), smoke test only"
        provenance["gan"] = {
            "checkpoint": None,
            "checkpoint_sha256": None,
            "steps": 0,
            "seed": config.generation.seed,
            "training_set": None,
            "untrained": label,
        }
    else:
        return None, "no GAN checkpoint configured (gan.checkpoint)"
    provenance["gan"]["generator_weights_sha256"] = state_dict_sha256(generator)
    generator = generator.to(musicgen.device)
    return GanSynthesizer(generator, musicgen, label, provenance, setup.clip_seed), ""


@register
class Gan(Condition):
    name = "gan"

    def __init__(self, setup: RunSetup) -> None:
        super().__init__(setup)
        self.gan, self.missing = load_gan_for_run(setup)

    def checkpoints(self) -> dict[str, str | None]:
        return {"gan": self.gan.label if self.gan else None}

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        if self.gan is None:
            raise ConditionSkipped(self.missing or "no GAN generator loaded (gan.checkpoint)")
        seed = self.gan.seed_for(f"{segment.id}.{self.name}")
        audio = self.gan.synthesize(segment.embeddings, segment.duration, seed)
        return ClipPlan(
            audio=audio,
            audio_rate=self.gan.sampling_rate,
            provenance={**self.gan.provenance, "seed": seed},
        )
