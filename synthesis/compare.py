"""Objective comparison of conditions in a stimulus set, e.g. `vit_adapter` against `gan`.

`python -m synthesis compare --set stimuli/SET --conditions vit_adapter gan --out DIR` measures
every clip of the named conditions against the reference clip of its segment with the analysis
package's objective metrics (`analysis.objective`), so the report can set listeners' judgements
beside them:

- `tempo_error`: relative tempo error, octave errors forgiven (`estimate_tempo`, `tempo_error`);
- `chroma_similarity`: cosine similarity of mean constant-Q chroma vectors (librosa);
- `logmel_distance`: RMS difference (dB) of mean log-mel spectra (the spectral distance);
- the emotion cues as differences from the reference (`analysis.objective.cue_differences`:
  tempo, key agreement, mode, dynamic range, onset rate, brightness, pitch-class distance);
- `frechet_distance`: per condition, between the Gaussians of its clips' and the reference clips'
  embeddings (`mel_statistics`, the analysis package's default embedding), with a bootstrap
  interval and the sample sizes (`frechet_summary`; small sets bias it upwards).

Writes `comparison_clips.csv` (one row per clip), `comparison.csv` (one row per condition: clip
count, mean and SD of each metric, the Frechet distance) and `comparison.json` (both tables).
Use a set generated from held-out videos (not the ones the adapter or GAN was trained on) to
measure generalisation. `analysis` never imports `synthesis`; this is the one direction allowed.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from typing import Any

CLIP_METRICS = (
    "tempo_error",
    "chroma_similarity",
    "logmel_distance",
    "tempo_log2_ratio",
    "key_agreement",
    "mode_agreement",
    "mode_strength_diff",
    "loudness_diff",
    "dynamic_range_diff",
    "onset_rate_log2_ratio",
    "centroid_log2_ratio",
    "pitch_class_distance",
)


class ComparisonError(ValueError):
    """A set or a condition that cannot be compared (missing, or without reference clips)."""


def _objective() -> Any:
    try:
        from analysis import objective
    except ImportError as error:  # pandas/scipy come with the analysis extra
        raise ComparisonError(
            f"the comparison uses the analysis package's metrics, which need its extra "
            f"(pip install -e '.[analysis]'): {error}"
        ) from error
    return objective


def _clean(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def compare_conditions(
    set_folder: pathlib.Path, conditions: list[str], out: pathlib.Path
) -> dict[str, Any]:
    """Objective metrics of `conditions` against the references of `set_folder`; writes `out`.

    Returns the JSON table. Raises ComparisonError when the set has no manifest, a condition has
    no clips, or no segment has a reference clip.
    """
    objective = _objective()
    manifest_path = set_folder / "manifest.json"
    if not manifest_path.is_file():
        raise ComparisonError(f"no stimulus set at {set_folder} (no manifest.json)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    clips = manifest.get("clips", [])
    present = sorted({clip["condition"] for clip in clips})
    absent = [name for name in conditions if name not in present]
    if absent:
        raise ComparisonError(
            f"{set_folder} has no clips of {absent}; its conditions are {present}"
        )
    references = {clip["segment"]: clip for clip in clips if clip["condition"] == "reference"}
    if not references:
        raise ComparisonError(f"{set_folder} has no reference clips to compare with")

    rows: list[dict[str, Any]] = []
    embeddings: dict[str, list[Any]] = {name: [] for name in [*conditions, "reference"]}
    reference_audio: dict[str, tuple[Any, int, dict[str, Any]]] = {}
    for segment, reference in sorted(references.items()):
        audio, rate = objective.read_wav(set_folder / reference["path"])
        reference_audio[segment] = (audio, rate, objective.emotion_cues(audio, rate))
        embeddings["reference"].append(objective.mel_statistics(audio, rate))
    for clip in sorted(clips, key=lambda c: (c["condition"], c["id"])):
        if clip["condition"] not in conditions or clip["segment"] not in reference_audio:
            continue
        ref_audio, ref_rate, ref_cues = reference_audio[clip["segment"]]
        audio, rate = objective.read_wav(set_folder / clip["path"])
        if rate != ref_rate:
            raise ComparisonError(f"clip {clip['id']}: {rate} Hz, its reference {ref_rate} Hz")
        cues = objective.emotion_cues(audio, rate)
        rows.append(
            {
                "clip": clip["id"],
                "segment": clip["segment"],
                "condition": clip["condition"],
                "tempo_reference": ref_cues["tempo"],
                "tempo": cues["tempo"],
                "tempo_error": objective.tempo_error(cues["tempo"], ref_cues["tempo"]),
                "chroma_similarity": objective.chroma_similarity(audio, ref_audio, rate),
                "logmel_distance": objective.logmel_distance(audio, ref_audio, rate),
                "loudness_diff": cues["loudness"] - ref_cues["loudness"],
                **objective.cue_differences(cues, ref_cues),
            }
        )
        embeddings[clip["condition"]].append(objective.mel_statistics(audio, rate))

    import numpy as np

    summary = []
    for name in conditions:
        own = [row for row in rows if row["condition"] == name]
        entry: dict[str, Any] = {"condition": name, "clips": len(own)}
        for metric in CLIP_METRICS:
            values = np.array([row[metric] for row in own], dtype=float)
            finite = values[np.isfinite(values)]
            entry[f"{metric}_mean"] = _clean(finite.mean()) if finite.size else None
            entry[f"{metric}_sd"] = _clean(finite.std(ddof=1)) if finite.size > 1 else None
        frechet = (
            objective.frechet_summary(embeddings[name], embeddings["reference"])
            if embeddings[name]
            else {}
        )
        entry["frechet_distance"] = _clean(frechet.get("frechet_distance", math.nan))
        entry["frechet_ci_low"] = _clean(frechet.get("frechet_ci_low", math.nan))
        entry["frechet_ci_high"] = _clean(frechet.get("frechet_ci_high", math.nan))
        entry["frechet_bias_warning"] = frechet.get("frechet_bias_warning")
        summary.append(entry)

    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "comparison_clips.csv", rows)
    _write_csv(out / "comparison.csv", summary)
    table = {
        "set": manifest.get("name"),
        "set_folder": str(set_folder),
        "fit_for_studies": manifest.get("fit_for_studies"),
        "conditions": conditions,
        "embedding": "analysis.objective.mel_statistics",
        "metrics": {
            "tempo_error": "relative tempo error vs the reference, octave errors forgiven (lower "
            "is closer)",
            "chroma_similarity": "cosine similarity of mean chroma (1 = same pitch classes)",
            "logmel_distance": "RMS difference of mean log-mel spectra in dB (lower is closer)",
            "frechet_distance": "Frechet distance of mel-statistics embeddings to the "
            "references' (lower is closer), with a bootstrap 95% interval",
        },
        "frechet_caveat": objective.FRECHET_CAVEAT,
        "summary": summary,
        "clips": [{key: _json_number(value) for key, value in row.items()} for row in rows],
    }
    (out / "comparison.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    return table


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


def _write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    fields = list(rows[0]) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
