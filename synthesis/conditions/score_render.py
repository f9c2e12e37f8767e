"""`score_render`: the segment's score slice rendered by FluidSynth with a General MIDI SoundFont.

The classic baseline: the right notes, the instruments the score names (its program numbers),
and no performance nuance. FluidSynth runs as a command (Debian's `fluidsynth`), rendering
offline as fast as it can into raw float samples at the set's rate: no Python binding to build,
and the same binary a person can run by hand on the slice to hear what the clip was made from.
The SoundFont defaults to Debian's fluid-soundfont-gm (FluidR3_GM.sf2); its sha256 is in every
clip's provenance and in `generator.checkpoints`, so another SoundFont remakes the set's clips.
"""

from __future__ import annotations

import functools
import pathlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np

from synthesis.conditions.base import (
    ClipPlan,
    Condition,
    ConditionSkipped,
    RunSetup,
    SegmentInput,
    register,
)
from synthesis.sections import FILE_PATH, ConfigError, Section
from synthesis.video import file_sha256

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"  # Debian's fluid-soundfont-gm

INSTALL_ADVICE = (
    "install Debian's fluidsynth and fluid-soundfont-gm (`make fluidsynth`, or "
    "`apt-get install fluidsynth fluid-soundfont-gm`)"
)
RENDER_TIMEOUT_SECONDS = 300


@dataclass
class ScoreRenderConfig(Section):
    """The `score_render` section: the score's slice through FluidSynth and a GM SoundFont."""

    soundfont: str = field(default=DEFAULT_SOUNDFONT, metadata=FILE_PATH)  # any General MIDI .sf2
    fluidsynth: str = "fluidsynth"  # the command (Debian's `fluidsynth` package)
    gain: float = 0.5  # FluidSynth's master gain; loudness is matched afterwards anyway
    reverb: bool = False  # dry by default: the references are close-miked recordings


@functools.cache
def fluidsynth_version(command: str) -> str:
    result = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0].strip() if first else "FluidSynth (unknown version)"


def check_renderer(settings: ScoreRenderConfig) -> tuple[str, pathlib.Path]:
    """(the FluidSynth command's path, the SoundFont's path); a ConfigError says what is missing."""
    command = shutil.which(settings.fluidsynth)
    if command is None:
        raise ConfigError(
            f"score_render needs the FluidSynth command {settings.fluidsynth!r}, which is not "
            f"installed: {INSTALL_ADVICE}, or set score_render.fluidsynth"
        )
    soundfont = pathlib.Path(settings.soundfont)
    if not soundfont.is_file():
        raise ConfigError(
            f"the SoundFont {soundfont} (score_render.soundfont) does not exist: {INSTALL_ADVICE}, "
            "or point score_render.soundfont at a General MIDI .sf2"
        )
    return command, soundfont


def render_midi(
    midi: bytes,
    sample_rate: int,
    soundfont: pathlib.Path,
    command: str = "fluidsynth",
    gain: float = 0.5,
    reverb: bool = False,
) -> np.ndarray:
    """A MIDI file's bytes -> (2, samples) float32 audio at `sample_rate`, by FluidSynth.

    The audio runs on past the last note's end by the instruments' release; the caller cuts it.
    Raises ConditionSkipped with FluidSynth's own message when it fails.
    """
    with tempfile.TemporaryDirectory(prefix="score_render-") as folder:
        midi_path = pathlib.Path(folder) / "slice.mid"
        raw_path = pathlib.Path(folder) / "slice.raw"
        midi_path.write_bytes(midi)
        arguments = [
            command,
            "-n",  # no MIDI input device
            "-i",  # no interactive shell
            "-q",
            "-R",
            "1" if reverb else "0",
            "-C",
            "0",  # chorus off: it smears onsets and pitch
            "-g",
            f"{gain:g}",
            "-r",
            str(int(sample_rate)),
            "-T",
            "raw",
            "-O",
            "float",
            "-E",
            "little",
            "-F",
            str(raw_path),
            str(soundfont),
            str(midi_path),
        ]
        try:
            result = subprocess.run(
                arguments, capture_output=True, text=True, timeout=RENDER_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired as error:
            raise ConditionSkipped(
                f"FluidSynth did not finish within {RENDER_TIMEOUT_SECONDS} s"
            ) from error
        if result.returncode != 0 or not raw_path.is_file():
            message = (result.stderr or result.stdout).strip().splitlines()
            raise ConditionSkipped(
                f"FluidSynth failed (exit {result.returncode}): "
                + (message[-1] if message else "no message")
            )
        samples = np.fromfile(raw_path, dtype="<f4")
    if samples.size == 0:
        raise ConditionSkipped("FluidSynth rendered no audio")
    return np.ascontiguousarray(samples.reshape(-1, 2).T, dtype=np.float32)


@register
class ScoreRender(Condition):
    name = "score_render"
    needs_score = True
    sections = {"score_render": ScoreRenderConfig}

    def __init__(self, setup: RunSetup) -> None:
        super().__init__(setup)
        self.settings = setup.config.score_render
        self.command, self.soundfont = check_renderer(self.settings)
        self.soundfont_sha256 = file_sha256(self.soundfont)
        self.version = fluidsynth_version(self.command)
        self.rate = setup.musicgen.sampling_rate  # the set's rate: no resampling afterwards

    def checkpoints(self) -> dict[str, str | None]:
        return {"soundfont": f"{self.soundfont.name} sha256:{self.soundfont_sha256}"}

    def plan(self, segment: SegmentInput, segments: list[SegmentInput]) -> ClipPlan:
        if segment.score is None:  # segment_problem drops these; kept for direct calls
            raise ConditionSkipped(f"{segment.id} has no score")
        audio = render_midi(
            segment.score.midi_bytes(),
            self.rate,
            self.soundfont,
            self.command,
            self.settings.gain,
            self.settings.reverb,
        )
        return ClipPlan(
            audio=audio,
            audio_rate=self.rate,
            provenance={
                "model": f"{self.version} (fluidsynth command)",
                "model_family": "fluidsynth",
                "weights_sha256": self.soundfont_sha256,
                "soundfont": self.soundfont.name,
                "soundfont_sha256": self.soundfont_sha256,
                "encoder": None,
                "seed": None,  # deterministic: nothing is sampled
                "guidance": None,
                "prompt": None,
                "adapter": None,
                "renderer": {"gain": self.settings.gain, "reverb": self.settings.reverb},
                **segment.score.provenance(),
            },
        )
