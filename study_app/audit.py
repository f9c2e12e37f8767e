"""Blinding audit: act as a participant who wants to cheat, and see whether anything the browser
can observe predicts a clip's condition.

For each media response of each trial (and each waveform outline a page fetches) we keep what
a browser sees: URL, status, headers, body size, the WAV header (format, duration, chunks), the
response time and whether the same bytes came earlier in the session. We never use the samples
themselves: telling the sounds apart is the participant's task, not a leak. A nearest-centroid
classifier, cross-validated across participants, predicts reference vs generated from those
features; its balanced accuracy is compared with chance by a permutation test (Holm-adjusted
over all tasks, familywise alpha 0.05) and given a Wilson interval.

`audit_study(app, slug)` plays audit participants through an open study with the app's test
client (enrolled as previews, deleted afterwards); `analyse(observations)` is pure and is what the
tests call with hand-made observations as well. `flask --app study_app audit-blinding SLUG`
prints the report.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import click
import numpy as np
from flask import Flask
from flask.cli import with_appcontext
from flask.testing import FlaskClient

from sightsound_stats import holm_adjust, wilson_interval

REFERENCE = "reference"
IGNORED_HEADERS = {"date"}  # a clock reading, the same for every clip
TRANSPORT, RECURRENCE = "transport", "recurrence"


# What the browser observes ---------------------------------------------------------------


@dataclass
class Observation:
    """One media response as a participant's browser saw it, plus the server-side truth."""

    participant: int
    trial: int  # position in the participant's session
    trial_type: str
    slot: str
    url: str
    status: int
    headers: dict[str, str]
    size: int
    sha256: str
    elapsed_ms: float
    wav: dict[str, Any] = field(default_factory=dict)
    seen_before: int = 0  # how often these exact bytes were served earlier in the session
    label: str | None = None  # the clip's condition (None: not a clip, e.g. tones, video)


def wav_header(data: bytes) -> dict[str, Any]:
    """The RIFF chunk list and format of a WAV body; {} for anything else."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return {}
    info: dict[str, Any] = {"chunks": [], "riff_size": struct.unpack("<I", data[4:8])[0]}
    offset = 12
    while offset + 8 <= len(data):
        name, size = struct.unpack("<4sI", data[offset : offset + 8])
        info["chunks"].append(name.decode("latin-1"))
        if name == b"fmt " and size >= 16:
            tag, channels, rate, byte_rate, align, bits = struct.unpack(
                "<HHIIHH", data[offset + 8 : offset + 24]
            )
            info.update(format=tag, channels=channels, rate=rate, byte_rate=byte_rate)
            info.update(align=align, bits=bits)
        elif name == b"data":
            info["data_bytes"] = size
        offset += 8 + size + (size & 1)
    if info.get("byte_rate") and "data_bytes" in info:
        info["duration"] = info["data_bytes"] / info["byte_rate"]
    info["header_sha"] = hashlib.sha256(data[: min(len(data), 64)]).hexdigest()[:16]
    return info


class _FormReader(HTMLParser):
    """The trial form's fields, so the audit can answer any trial type like a browser would."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, list[tuple[str, str]]] = {}  # name -> [(input type, value)]
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and values.get("id") == "trial-form":
            self._in_form = True
        elif tag in ("input", "textarea", "select") and self._in_form and values.get("name"):
            kind = values.get("type", tag).lower()
            self.fields.setdefault(values["name"], []).append((kind, values.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


FORM_ACTION = re.compile(r'<form[^>]*id="trial-form"[^>]*\saction="([^"]+)"', re.S)
MEDIA_SRC = re.compile(r'<(?:audio|video)[^>]*\ssrc="([^"]+)"')
# The waveform outline a page's script fetches (MUSHRA's open Reference: participant.py `peaks`).
PEAKS_SRC = re.compile(r'\sdata-peaks="([^"]+)"')


def fill_form(html: str, rng: np.random.Generator) -> dict[str, Any]:
    """A plausible answer: a random choice per radio group, one box per checkbox group, the
    hidden fields as they are, and a few words in free-text fields."""
    reader = _FormReader()
    reader.feed(html)
    data: dict[str, Any] = {}
    for name, inputs in reader.fields.items():
        kinds = {kind for kind, _ in inputs}
        values = [value for _, value in inputs]
        if "radio" in kinds or "select" in kinds:
            data[name] = values[int(rng.integers(len(values)))] if values else "1"
        elif "checkbox" in kinds:
            data[name] = values[0] if len(values) == 1 else values[: 1 + int(rng.integers(2))]
        elif kinds & {"text", "textarea"}:
            data[name] = "audit"
        elif "number" in kinds or "range" in kinds:
            data[name] = values[0] or "1"
        else:
            data[name] = values[0] if values else ""
    return data


def play_participant(client, step: str, index: int, rng, labels_for) -> list[Observation]:
    """One audit participant through the whole study with a Flask test client, from their
    step URL (/p/<token>/) on."""
    seen: dict[str, int] = {}
    observations: list[Observation] = []
    for position in range(500):
        html = client.get(step).get_data(as_text=True)
        action = FORM_ACTION.search(html)
        if action is None:
            return observations
        media = MEDIA_SRC.findall(html) + PEAKS_SRC.findall(html)
        trial_token = action.group(1).rsplit("/", 1)[1]
        truth = labels_for(trial_token)
        for url in media:
            started = time.perf_counter()
            got = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            body = got.get_data()
            digest = hashlib.sha256(body).hexdigest()
            kind, slot = url.rsplit("/", 2)[1:]
            # (an outline is of an open slot, which hides no condition: never labelled)
            label = truth["slots"].get(slot) if kind == "m" else None
            slot = slot if kind == "m" else f"{kind}/{slot}"
            observations.append(
                Observation(
                    participant=index,
                    trial=position,
                    trial_type=truth["trial_type"],
                    slot=slot,
                    url=url,
                    status=got.status_code,
                    headers={
                        k: v for k, v in got.headers.items() if k.lower() not in IGNORED_HEADERS
                    },
                    size=len(body),
                    sha256=digest,
                    elapsed_ms=elapsed,
                    wav=wav_header(body),
                    seen_before=seen.get(digest, 0),
                    label=label,
                )
            )
            seen[digest] = seen.get(digest, 0) + 1
        answer = client.post(action.group(1), data=fill_form(html, rng) | truth["navigation"])
        if answer.status_code != 303:
            raise RuntimeError(f"audit answer refused ({answer.status_code}) on {truth}")
    raise RuntimeError("study did not end after 500 steps")


# Features and the classifier -------------------------------------------------------------


def feature_matrix(observations: Sequence[Observation], group: str) -> tuple[np.ndarray, list]:
    """Numeric features of one group; categorical values are coded by first appearance."""
    rows = [_features(obs, group) for obs in observations]
    codes: dict[str, dict[str, int]] = {}
    names = sorted({name for row in rows for name in row})
    matrix = np.full((len(rows), len(names)), -1.0)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            if name not in row:
                continue
            value = row[name]
            if not isinstance(value, int | float) or isinstance(value, bool):
                table = codes.setdefault(name, {})
                value = table.setdefault(json.dumps(value, sort_keys=True), len(table))
            matrix[i, j] = float(value)
    return matrix, names


def _features(obs: Observation, group: str) -> dict[str, Any]:
    if group == RECURRENCE:
        return {"seen_before": obs.seen_before, "trial_position": obs.trial}
    if group != TRANSPORT:
        raise ValueError(f"unknown feature group {group!r}")
    features: dict[str, Any] = {
        "status": obs.status,
        "size": obs.size,
        "elapsed_ms": obs.elapsed_ms,
        "url_length": len(obs.url),
        "header_names": sorted(obs.headers),
    }
    for name, value in obs.headers.items():
        features[f"h:{name.lower()}"] = value
        if value.isdigit():
            features[f"n:{name.lower()}"] = int(value)
    for name, value in obs.wav.items():
        features[f"wav:{name}"] = value
    return features


def _fit_predict(train_x, train_y, test_x) -> np.ndarray:
    """Nearest centroid in standardized feature space (constant features drop out)."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    keep = std > 1e-12
    if not keep.any() or len(set(train_y.tolist())) < 2:
        majority = np.bincount(train_y, minlength=2).argmax()
        return np.full(len(test_x), majority)
    z_train = (train_x[:, keep] - mean[keep]) / std[keep]
    z_test = (test_x[:, keep] - mean[keep]) / std[keep]
    centroids = np.stack([z_train[train_y == c].mean(axis=0) for c in (0, 1)])
    distances = ((z_test[:, None, :] - centroids[None]) ** 2).sum(axis=2)
    return distances.argmin(axis=1)


def balanced_accuracy(y, predicted) -> float:
    rates = [np.mean(predicted[y == c] == c) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(rates))


def cross_validated(x, y, groups, folds: int = 5) -> tuple[float, int]:
    """Balanced accuracy and the number of correct predictions, folds split by participant."""
    unique = np.unique(groups)
    fold_of = {g: i % folds for i, g in enumerate(unique)}
    fold = np.array([fold_of[g] for g in groups])
    predicted = np.zeros_like(y)
    for f in range(min(folds, len(unique))):
        test = fold == f
        predicted[test] = _fit_predict(x[~test], y[~test], x[test])
    return balanced_accuracy(y, predicted), int((predicted == y).sum())


@dataclass
class TaskResult:
    task: str  # e.g. "abx/a", "abx/all", "emotion_rating/clip"
    group: str  # feature group
    n: int
    generated_share: float
    balanced_accuracy: float
    accuracy: float
    accuracy_ci: tuple[float, float]
    majority_baseline: float
    p_value: float
    features: list[str]
    leaks: bool
    p_adjusted: float = 1.0  # Holm-adjusted over every task and feature group of the audit


def classify(x, y, groups, *, permutations: int, alpha: float, seed: int, task, group, names):
    rng = np.random.default_rng(seed)
    score, correct = cross_validated(x, y, groups)
    null = np.array(
        [cross_validated(x, rng.permutation(y), groups)[0] for _ in range(permutations)]
    )
    p_value = (1 + int((null >= score - 1e-12).sum())) / (permutations + 1)
    share = float(y.mean())
    return TaskResult(
        task=task,
        group=group,
        n=len(y),
        generated_share=share,
        balanced_accuracy=score,
        accuracy=correct / len(y),
        accuracy_ci=wilson_interval(correct, len(y)),
        majority_baseline=max(share, 1 - share),
        p_value=p_value,
        features=names,
        leaks=p_value < alpha and score > 0.5,  # before adjustment; see holm()
    )


def analyse(
    observations: Sequence[Observation],
    *,
    permutations: int = 999,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Iterable[str] = (TRANSPORT, RECURRENCE),
) -> list[TaskResult]:
    """Per trial type and slot (and all slots of a type together): can the features tell a
    generated clip from a reference one better than chance?"""
    labelled = [o for o in observations if o.label is not None and o.status == 200]
    tasks: dict[str, list[Observation]] = {}
    for obs in labelled:
        tasks.setdefault(f"{obs.trial_type}/{obs.slot}", []).append(obs)
        tasks.setdefault(f"{obs.trial_type}/all", []).append(obs)
    results = []
    for task, rows in sorted(tasks.items()):
        if task.endswith("/all") and len({o.slot for o in rows}) == 1:
            continue  # the same as the single slot's task
        y = np.array([o.label != REFERENCE for o in rows], dtype=int)
        if len(set(y.tolist())) < 2:
            continue
        participants = np.array([o.participant for o in rows])
        for group in groups:
            x, names = feature_matrix(rows, group)
            results.append(
                classify(
                    x,
                    y,
                    participants,
                    permutations=permutations,
                    alpha=alpha,
                    seed=seed,
                    task=task,
                    group=group,
                    names=names,
                )
            )
    return holm(results, alpha)


def holm(results: list[TaskResult], alpha: float) -> list[TaskResult]:
    """Holm's step-down adjustment: many tasks are tested, a leak must survive all of them."""
    for result, adjusted in zip(results, holm_adjust([r.p_value for r in results]), strict=True):
        result.p_adjusted = adjusted
        result.leaks = adjusted < alpha and result.balanced_accuracy > 0.5
    return results


def x_copy_reveals_answer(observations: Sequence[Observation]) -> dict[str, Any]:
    """ABX: does X's content hash equal that of the slot it copies (revealing the answer, not
    the condition)? Share of ABX trials where hashing the bytes answers the question."""
    by_trial: dict[tuple[int, int], dict[str, str]] = {}
    for obs in observations:
        if obs.trial_type == "abx":
            by_trial.setdefault((obs.participant, obs.trial), {})[obs.slot] = obs.sha256
    decidable = [t for t in by_trial.values() if {"a", "b", "x"} <= t.keys() and t["a"] != t["b"]]
    revealing = [t for t in decidable if t["x"] in (t["a"], t["b"])]
    return {"abx_trials": len(decidable), "x_bytes_equal_a_or_b": len(revealing)}


# Playing audit participants through a study -----------------------------------------------


class BrowserClient(FlaskClient):
    """A test client whose every request runs in an app context of its own, as each request
    does on a real server. Inside a caller's app context (a CLI command has one) Flask would run
    every request in that one context: its `g` would hand the first participant's CSRF token to
    the next participant, whose own session holds none (answers refused with 400), and one
    database session would span every request."""

    def open(self, *args: Any, **kwargs: Any):
        with self.application.app_context():
            return super().open(*args, **kwargs)


@dataclass
class AuditReport:
    study: str
    participants: int
    observations: int
    results: list[TaskResult]
    x_copy: dict[str, Any]

    @property
    def leaks(self) -> list[TaskResult]:
        return [r for r in self.results if r.leaks]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["leaks"] = [f"{r.task} ({r.group})" for r in self.leaks]
        return data

    def text(self) -> str:
        lines = [
            f"blinding audit of study {self.study!r}: {self.participants} audit participants, "
            f"{self.observations} media responses",
            f"{'task':24} {'features':10} {'n':>4} {'bal.acc':>7} {'acc [95% CI]':>20} "
            f"{'majority':>8} {'p':>6} {'p_holm':>6}",
        ]
        for r in self.results:
            ci = f"{r.accuracy:.2f} [{r.accuracy_ci[0]:.2f}, {r.accuracy_ci[1]:.2f}]"
            lines.append(
                f"{r.task:24} {r.group:10} {r.n:4d} {r.balanced_accuracy:7.2f} {ci:>20} "
                f"{r.majority_baseline:8.2f} {r.p_value:6.3f} {r.p_adjusted:6.3f}"
                + ("  LEAK" if r.leaks else "")
            )
        x = self.x_copy
        lines.append(
            f"ABX: X's bytes equal A's or B's in {x['x_bytes_equal_a_or_b']} of "
            f"{x['abx_trials']} trials (hashing reveals the answer, not the condition)"
        )
        lines.append(
            "verdict: "
            + (
                "LEAK: " + ", ".join(f"{r.task} ({r.group})" for r in self.leaks)
                if self.leaks
                else "no feature predicts the condition better than chance"
            )
        )
        return "\n".join(lines)


def collect(app: Flask, slug: str, participants: int, seed: int = 0) -> list[Observation]:
    """Play `participants` audit participants through open study `slug`; they are enrolled as
    previews (never counted, exported or balanced against) and deleted afterwards."""
    from sqlalchemy import select

    from .extensions import db
    from .models import Clip, Participant, Study, Trial, as_utc
    from .services import ExternalIds, enroll
    from .trial_types import get_trial_type

    rng = np.random.default_rng(seed)
    with app.app_context():
        study = db.session.scalar(select(Study).where(Study.slug == slug))
        if study is None:
            raise click.ClickException(f"no study {slug!r}")
        if study.status != "open":
            raise click.ClickException(
                f"study {slug!r} is {study.status}: the audit plays participants through it, so "
                "it needs an open study (audit a copy, or open it briefly)"
            )
        set_id = study.stimulus_set_id
        conditions = dict(
            db.session.execute(
                select(Clip.key, Clip.condition).where(Clip.stimulus_set_id == set_id)
            ).all()
        )

    def labels_for(trial_token: str) -> dict[str, Any]:
        with app.app_context():
            trial = db.session.scalar(select(Trial).where(Trial.token == trial_token))
            trial_type = get_trial_type(trial.trial_type)
            block = trial.block
            wait = trial_type.min_answer_seconds(trial.spec, block)
            if wait > 0 and trial.presented_at is not None:
                # A pause (no media): a browser would wait out its countdown, which the server
                # enforces; the audit moves the page's serving time back instead. Nothing the
                # classifier sees comes from this.
                trial.presented_at = as_utc(trial.presented_at) - timedelta(seconds=wait)
                db.session.commit()
            refs = trial_type.media(trial.spec)
            slots = {
                s: conditions.get(r.key)
                for s, r in refs.items()
                if r.kind == "clip" and s not in trial_type.open_slots
            }
            return {
                "trial_type": trial.trial_type,
                "slots": slots,
                "navigation": _navigation_fields(trial.trial_type, trial.spec),
            }

    observations: list[Observation] = []
    tokens: list[str] = []
    try:
        for index in range(participants):
            with app.app_context():
                # A preview: never counted, exported or balanced against (its own indices).
                study = db.session.scalar(select(Study).where(Study.slug == slug))
                token = enroll(study, ExternalIds(), preview=True).token
            tokens.append(token)
            # A browser of its own: its own cookies, hence its own CSRF session, taken from
            # the pages it is served (CSRF stays on, as for real participants).
            client = BrowserClient(app, app.response_class, use_cookies=True)
            observations += play_participant(client, f"/p/{token}/", index, rng, labels_for)
    finally:
        with app.app_context():
            for token in tokens:
                participant = db.session.scalar(
                    select(Participant).where(Participant.token == token)
                )
                if participant is not None and participant.is_preview:
                    db.session.delete(participant)
            db.session.commit()
    return observations


def _navigation_fields(trial_type: str, spec: dict[str, Any]) -> dict[str, str]:
    """Fields that keep an audit participant going: a pass through screenings that could end
    the session (so every later block is audited too), and what a page's script would fill in
    (MUSHRA's "every slider moved"). Only navigation: no feature the classifier sees comes
    from the server's side."""
    if trial_type == "mushra":
        # The sliders start unset and mushra.js fills each score field once its slider is set.
        return {"moved": "all"} | {f"score_{s['slot']}": "50" for s in spec["stimuli"]}
    if trial_type == "p808_qualification":
        counts = {f"count_t{i}": str(n) for i, n in enumerate(spec["tone_counts"], 1)}
        return {"hearing": "normal", "device": "headphones", "environment": "quiet"} | counts
    if trial_type == "headphone_check":
        return {"answer": spec["correct_answer"]}
    return {}


def audit_study(
    app: Flask, slug: str, participants: int = 12, permutations: int = 999, seed: int = 0
) -> AuditReport:
    observations = collect(app, slug, participants, seed)
    return AuditReport(
        study=slug,
        participants=participants,
        observations=len(observations),
        results=analyse(observations, permutations=permutations, seed=seed),
        x_copy=x_copy_reveals_answer(observations),
    )


@click.command("audit-blinding")
@with_appcontext
@click.argument("slug")
@click.option("--participants", default=12, show_default=True, help="Audit participants to play.")
@click.option("--permutations", default=999, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write JSON here.")
def audit_blinding(slug: str, participants: int, permutations: int, seed: int, json_out) -> None:
    """Act as a cheating participant: can anything but the sound reveal a clip's condition?

    Plays audit participants through open study SLUG (as previews, deleted afterwards),
    then cross-validates a classifier on what their browsers saw. Exit status 1 on a leak."""
    from flask import current_app

    report = audit_study(current_app._get_current_object(), slug, participants, permutations, seed)
    click.echo(report.text())
    if json_out:
        with open(json_out, "w") as out:
            json.dump(report.to_json(), out, indent=2)
    if report.leaks:
        raise SystemExit(1)
