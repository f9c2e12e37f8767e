"""Record the spoken instructions of the P.808 trapping clips with espeak-ng.

ITU-T P.808 trapping questions are clips in which a voice interrupts and tells the listener which
answer to give. The five instructions ("Please select the answer <label> to confirm your
attention.", one per ACR label) are synthesized once, here, and committed to
`study_app/p808_voices/answer_<1-5>.wav` (16 kHz mono 16-bit), so the app needs no speech
synthesizer at run time. Replace the files with human recordings of the same sentences if you
prefer; `study_app.p808.load_instruction` reads any PCM WAV.

    apt-get install espeak-ng
    python scripts/make_trap_voices.py [--voice en-us] [--words-per-minute 165]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from study_app.audio import read_wav_samples, write_wav
from study_app.p808 import ACR_LABELS, INSTRUCTION_RATE, VOICES_DIR, instruction_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default="en-us")
    parser.add_argument("--words-per-minute", type=int, default=165)
    args = parser.parse_args()
    VOICES_DIR.mkdir(parents=True, exist_ok=True)
    for rating in ACR_LABELS:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "speech.wav"
            subprocess.run(
                [
                    "espeak-ng",
                    "-v",
                    args.voice,
                    "-s",
                    str(args.words_per_minute),
                    "-w",
                    str(raw),
                    instruction_text(rating),
                ],
                check=True,
            )
            samples, rate = read_wav_samples(raw)
        mono = samples.mean(axis=1).astype(np.float64)
        speech = resample_poly(mono, INSTRUCTION_RATE, rate)
        speech *= 0.5 / max(float(np.max(np.abs(speech))), 1e-9)  # peak -6 dBFS
        out = VOICES_DIR / f"answer_{rating}.wav"
        write_wav(out, speech, INSTRUCTION_RATE)
        print(f"{out}: {len(speech) / INSTRUCTION_RATE:.2f} s  {instruction_text(rating)!r}")


if __name__ == "__main__":
    main()
