"""load_stimulus_set accepts a sound set and refuses a bad one, naming every problem.

Also covers study_app.audio, which the loader relies on to read WAV headers.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo_set import build_demo_set
from study_app import stimulus_set as stimulus_set_module
from study_app.audio import (
    canonical_wav_bytes,
    read_wav_info,
    read_wav_samples,
    write_wav,
)
from study_app.stimulus_set import StimulusSet, StimulusSetError, load_stimulus_set

SR = 44100


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template") / "set"
    build_demo_set(folder, n_sources=2, duration=1.0)
    return folder


@pytest.fixture
def folder(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of a valid set, inside tmp_path/set (tmp_path itself is 'outside')."""
    return Path(shutil.copytree(template, tmp_path / "set"))


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def problems(folder: Path) -> list[str]:
    with pytest.raises(StimulusSetError) as info:
        load_stimulus_set(folder)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def one_with(found: list[str], *needles: str) -> str:
    """The problem that mentions every needle (fails listing all problems otherwise)."""
    matches = [p for p in found if all(n in p for n in needles)]
    assert matches, f"no problem mentions {needles}; problems: {found}"
    return matches[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replace_clip_audio(folder: Path, clip: dict[str, Any], samples: np.ndarray, rate: int) -> None:
    """Rewrite a clip's file and update its sha256, so only the intended difference remains."""
    path = folder / clip["path"]
    write_wav(path, samples, rate)
    clip["sha256"] = sha256(path)


def tone(frames: int, rate: int = SR, channels: int = 1) -> np.ndarray:
    x = 0.1 * np.sin(2 * np.pi * 440 * np.arange(frames) / rate)
    return np.column_stack([x] * channels) if channels > 1 else x


# A valid set -----------------------------------------------------------------------------------


def test_valid_set_loads(folder: Path) -> None:
    stimuli = load_stimulus_set(folder)
    assert isinstance(stimuli, StimulusSet)
    assert stimuli.name == "demo"
    assert stimuli.folder == folder.resolve()
    assert stimuli.conditions()[0] == "reference"
    assert stimuli.conditions() == ["reference", "mismatched", "shuffled_notes", "sine_resynthesis"]
    segment = stimuli.segments[0]
    clips = stimuli.clips_for_segment(segment.id)
    assert set(clips) == set(stimuli.conditions())
    reference = clips["reference"]
    assert reference.segment == segment.id and reference.source == segment.source
    assert reference.path.is_absolute() and reference.path.is_relative_to(folder.resolve())
    assert reference.path.exists()
    assert stimuli.segment(segment.id) is segment
    assert stimuli.source(segment.source).video.exists()
    assert stimuli.clips_for_segment("nope") == {}
    with pytest.raises(KeyError):
        stimuli.segment("nope")
    with pytest.raises(KeyError):
        stimuli.source("nope")


# The manifest itself ---------------------------------------------------------------------------


def test_missing_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()
    one_with(problems(folder), "manifest.json", "not found")


def test_malformed_json(folder: Path) -> None:
    (folder / "manifest.json").write_text('{\n  "name": "demo",\n  "sources": [\n}')
    found = problems(folder)
    assert len(found) == 1
    one_with(found, "not valid JSON", "line 4", "column 1")


def test_nan_is_not_json(folder: Path) -> None:
    text = (folder / "manifest.json").read_text()
    text = re.sub(r'"loudness_lufs": [-0-9.]+', '"loudness_lufs": NaN', text, count=1)
    (folder / "manifest.json").write_text(text)
    one_with(problems(folder), "manifest.json", "NaN")


def test_not_an_object(folder: Path) -> None:
    (folder / "manifest.json").write_text("[]")
    one_with(problems(folder), "manifest.json", "JSON object")


def test_schema_violations_all_reported(folder: Path) -> None:
    m = read_manifest(folder)
    c0, c1, c2 = m["clips"][0], m["clips"][1], m["clips"][2]
    del c0["sha256"]
    c1["condition"] = "Bad-Name"
    c2["extra_key"] = 1
    del m["clips"][3]["provenance"]  # generated clips must say where they came from
    m["sources"][0]["video_sha256"] = "xyz"
    write_manifest(folder, m)
    found = problems(folder)
    one_with(found, "schema", c0["id"], "'sha256' is a required property")
    one_with(found, "schema", c1["id"], "condition", "Bad-Name")
    one_with(found, "schema", c2["id"], "extra_key")
    one_with(found, "schema", m["clips"][3]["id"], "provenance")
    one_with(found, "schema", m["sources"][0]["id"], "video_sha256")


def test_schema_top_level(folder: Path) -> None:
    m = read_manifest(folder)
    m["schema_version"] = "2.0"
    del m["name"]
    write_manifest(folder, m)
    found = problems(folder)
    one_with(found, "schema", "schema_version")
    one_with(found, "schema", "'name' is a required property")


# Ids and references ----------------------------------------------------------------------------


def test_duplicate_ids(folder: Path) -> None:
    m = read_manifest(folder)
    m["sources"][1]["id"] = m["sources"][0]["id"]
    m["segments"][1]["id"] = m["segments"][0]["id"]
    m["clips"][5]["id"] = m["clips"][4]["id"]
    write_manifest(folder, m)
    found = problems(folder)
    one_with(found, "duplicate source id", repr(m["sources"][0]["id"]))
    one_with(found, "duplicate segment id", repr(m["segments"][0]["id"]))
    one_with(found, "duplicate clip id", repr(m["clips"][4]["id"]))


def test_dangling_references(folder: Path) -> None:
    m = read_manifest(folder)
    m["clips"][0]["segment"] = "no_such_segment"
    m["segments"][1]["source"] = "no_such_source"
    write_manifest(folder, m)
    found = problems(folder)
    one_with(found, m["clips"][0]["id"], "segment", "no_such_segment")
    one_with(found, m["segments"][1]["id"], "source", "no_such_source")


def test_two_clips_of_one_condition(folder: Path) -> None:
    m = read_manifest(folder)
    segment = m["clips"][0]["segment"]
    twin = next(c for c in m["clips"] if c["segment"] == segment and c["condition"] == "mismatched")
    twin["condition"] = "reference"
    write_manifest(folder, m)
    found = problems(folder)
    message = one_with(found, segment, "'reference'")
    assert m["clips"][0]["id"] in message and twin["id"] in message


# Paths -----------------------------------------------------------------------------------------


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path the loader hashes or parses."""
    seen: list[Path] = []
    real_hash, real_info = stimulus_set_module.sha256_file, stimulus_set_module.read_wav_info

    def spy_hash(path: Path) -> str:
        seen.append(Path(path))
        return real_hash(path)

    def spy_info(path: Path):
        seen.append(Path(path))
        return real_info(path)

    monkeypatch.setattr(stimulus_set_module, "sha256_file", spy_hash)
    monkeypatch.setattr(stimulus_set_module, "read_wav_info", spy_info)
    return seen


def test_paths_leaving_the_folder(folder: Path, tmp_path: Path, opened: list[Path]) -> None:
    outside = tmp_path / "outside.wav"
    shutil.copy(folder / "audio" / "src01_seg01_reference.wav", outside)
    (folder / "audio" / "link.wav").symlink_to(outside)
    (folder / "escape").symlink_to(tmp_path)
    m = read_manifest(folder)
    clips = m["clips"]
    clips[0]["path"] = "../outside.wav"
    clips[1]["path"] = str(outside)  # absolute
    clips[2]["path"] = "audio/link.wav"  # symlink to a file outside
    clips[3]["path"] = "escape/outside.wav"  # through a symlinked directory
    clips[4]["path"] = "audio\\src01_seg01_reference.wav"
    clips[5]["path"] = "C:/audio/x.wav"
    m["sources"][0]["video"] = "video/../../outside.wav"
    write_manifest(folder, m)
    found = problems(folder)
    one_with(found, clips[0]["id"], "path", "'..'")
    one_with(found, clips[1]["id"], "path", "absolute")
    one_with(found, clips[2]["id"], "path", "leaves the set's folder")
    one_with(found, clips[3]["id"], "path", "leaves the set's folder")
    one_with(found, clips[4]["id"], "path", "backslash")
    one_with(found, clips[5]["id"], "path", "drive letter")
    one_with(found, m["sources"][0]["id"], "video", "'..'")
    # Refused before being touched: nothing outside the folder was hashed or parsed.
    root = folder.resolve()
    assert opened and all(p.resolve().is_relative_to(root) for p in opened)


def test_symlink_inside_the_folder_is_fine(folder: Path) -> None:
    m = read_manifest(folder)
    clip = m["clips"][0]
    (folder / "audio" / "alias.wav").symlink_to(folder / clip["path"])
    clip["path"] = "audio/alias.wav"
    write_manifest(folder, m)
    assert load_stimulus_set(folder).clips[0].path.name == Path(m["clips"][0]["id"]).name + ".wav"


def test_directory_instead_of_file(folder: Path) -> None:
    m = read_manifest(folder)
    m["clips"][0]["path"] = "audio"
    write_manifest(folder, m)
    one_with(problems(folder), m["clips"][0]["id"], "not a regular file")


# Files -----------------------------------------------------------------------------------------


def test_missing_files(folder: Path) -> None:
    m = read_manifest(folder)
    (folder / m["clips"][2]["path"]).unlink()
    (folder / m["sources"][1]["video"]).unlink()
    found = problems(folder)
    one_with(found, m["clips"][2]["id"], m["clips"][2]["path"], "not found")
    one_with(found, m["sources"][1]["id"], "video", "not found")


def test_sha256_mismatch(folder: Path) -> None:
    m = read_manifest(folder)
    m["clips"][1]["sha256"] = "0" * 64
    m["sources"][0]["video_sha256"] = "f" * 64
    write_manifest(folder, m)
    found = problems(folder)
    assert len(found) == 2
    one_with(found, m["clips"][1]["id"], "sha256 mismatch")
    one_with(found, m["sources"][0]["id"], "sha256 mismatch")


def test_modified_file_fails_its_hash(folder: Path) -> None:
    m = read_manifest(folder)
    path = folder / m["clips"][0]["path"]
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    one_with(problems(folder), m["clips"][0]["id"], "sha256 mismatch")


def test_wav_header_disagrees_with_manifest(folder: Path) -> None:
    m = read_manifest(folder)
    c0, c1, c2 = m["clips"][0], m["clips"][1], m["clips"][2]
    c0["sample_rate"] = 48000
    c1["channels"] = 2
    c2["duration"] = 1.002  # 2 ms: more than the 1 ms tolerance
    write_manifest(folder, m)
    found = problems(folder)
    one_with(found, c0["id"], "sample_rate", "48000", "44100")
    one_with(found, c1["id"], "channels", "2", "1")
    one_with(found, c2["id"], "duration", "44100 frames")


def test_duration_within_a_millisecond_is_accepted(folder: Path) -> None:
    m = read_manifest(folder)
    for clip in m["clips"]:
        clip["duration"] = 1.0005
    write_manifest(folder, m)
    load_stimulus_set(folder)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: b"ID3\x03" + data[4:], "not a WAV file"),
        (lambda data: data[:20] + struct.pack("<H", 3) + data[22:], "not PCM"),
        (lambda data: b"RIFF", "not a WAV file"),
    ],
    ids=["truncated", "not-riff", "float-format", "tiny"],
)
def test_corrupt_wav(folder: Path, damage, reason: str) -> None:
    m = read_manifest(folder)
    clip = m["clips"][0]
    path = folder / clip["path"]
    path.write_bytes(damage(path.read_bytes()))
    clip["sha256"] = sha256(path)
    write_manifest(folder, m)
    found = problems(folder)
    assert len(found) == 1, found
    one_with(found, clip["id"], "not a valid PCM WAV", reason)


# Clips of one segment --------------------------------------------------------------------------


def segment_clips(m: dict[str, Any]) -> list[dict[str, Any]]:
    segment = m["segments"][0]["id"]
    return [c for c in m["clips"] if c["segment"] == segment]


def test_clips_differ_in_duration(folder: Path) -> None:
    m = read_manifest(folder)
    clip = segment_clips(m)[1]
    replace_clip_audio(folder, clip, tone(SR - 200), SR)  # 4.5 ms shorter
    clip["duration"] = (SR - 200) / SR
    write_manifest(folder, m)
    found = problems(folder)
    assert len(found) == 1, found
    message = one_with(found, m["segments"][0]["id"], "differ in duration")
    assert clip["id"] in message


def test_clip_far_from_segment_duration(folder: Path) -> None:
    m = read_manifest(folder)
    m["segments"][0]["duration"] = 1.02
    write_manifest(folder, m)
    found = problems(folder)
    for clip in segment_clips(m):
        one_with(found, clip["id"], "segment", "more than 10 ms")


def test_clips_differ_in_sample_rate(folder: Path) -> None:
    m = read_manifest(folder)
    clip = segment_clips(m)[2]
    replace_clip_audio(folder, clip, tone(48000, 48000), 48000)
    clip["sample_rate"] = 48000
    write_manifest(folder, m)
    found = problems(folder)
    assert len(found) == 1, found
    one_with(found, m["segments"][0]["id"], "differ in sample_rate", clip["id"])


def test_clips_differ_in_channels(folder: Path) -> None:
    m = read_manifest(folder)
    clip = segment_clips(m)[3]
    replace_clip_audio(folder, clip, tone(SR, channels=2), SR)
    clip["channels"] = 2
    write_manifest(folder, m)
    found = problems(folder)
    assert len(found) == 1, found
    one_with(found, m["segments"][0]["id"], "differ in channels", clip["id"])


def test_clips_differ_in_loudness(folder: Path) -> None:
    m = read_manifest(folder)
    clip = segment_clips(m)[1]
    clip["loudness_lufs"] = -24.5
    write_manifest(folder, m)
    found = problems(folder)
    assert len(found) == 1, found
    one_with(found, m["segments"][0]["id"], "loudness_lufs", "1 LU", clip["id"])
    clip["loudness_lufs"] = -23.9  # within 1 LU
    write_manifest(folder, m)
    load_stimulus_set(folder)


def test_every_problem_is_reported(folder: Path) -> None:
    m = read_manifest(folder)
    clips = m["clips"]
    clips[0]["sha256"] = "1" * 64
    (folder / clips[1]["path"]).unlink()
    clips[2]["segment"] = "ghost"
    clips[3]["condition"] = "Not Valid"
    clips[4]["path"] = "../../etc/passwd"
    m["clips"].append(dict(clips[5]))  # duplicate id
    write_manifest(folder, m)
    found = problems(folder)
    one_with(found, clips[0]["id"], "sha256 mismatch")
    one_with(found, clips[1]["id"], "not found")
    one_with(found, clips[2]["id"], "ghost")
    one_with(found, clips[3]["id"], "condition")
    one_with(found, clips[4]["id"], "'..'")
    one_with(found, "duplicate clip id", clips[5]["id"])
    assert len(found) >= 6


# study_app.audio -------------------------------------------------------------------------------


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WAVE" + b"".join(
        cid + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
        for cid, data in chunks
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(channels: int, rate: int, bits: int, extensible: bool = False) -> bytes:
    align = channels * bits // 8
    head = struct.pack(
        "<HHIIHH", 0xFFFE if extensible else 1, channels, rate, rate * align, align, bits
    )
    if not extensible:
        return head
    guid = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return head + struct.pack("<HHI", 22, bits, 0) + guid


def test_canonical_wav_drops_metadata(tmp_path: Path) -> None:
    pcm = (np.arange(-50, 50, dtype="<i2") * 300).reshape(-1, 2)
    data = riff(
        (b"fmt ", fmt_chunk(2, 22050, 16)),
        (b"LIST", b"INFOISFT\x0e\x00\x00\x00secret-model\x00\x00"),
        (b"id3 ", b"ID3\x03\x00\x00\x00\x00\x00\x00x"),
        (b"data", pcm.tobytes()),
    )
    path = tmp_path / "meta.wav"
    path.write_bytes(data)
    canonical = canonical_wav_bytes(path)
    assert b"secret-model" not in canonical and b"LIST" not in canonical
    assert canonical[:4] == b"RIFF" and canonical[12:16] == b"fmt " and canonical[36:40] == b"data"
    assert len(canonical) == 44 + pcm.nbytes
    assert canonical[44:] == pcm.tobytes()  # 16-bit samples unchanged
    info = read_wav_info(io.BytesIO(canonical))
    assert (info.sample_rate, info.channels, info.frames) == (22050, 2, 50)


def test_canonical_wav_reduces_24_bit_extensible(tmp_path: Path) -> None:
    values = np.array([0, 256, -256, 8388607, -8388608, 1000 * 256 + 127], dtype=np.int64)
    raw = b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in values)
    path = tmp_path / "x24.wav"
    path.write_bytes(riff((b"fmt ", fmt_chunk(1, 48000, 24, extensible=True)), (b"data", raw)))
    info = read_wav_info(path)
    assert (info.sample_width, info.frames, info.sample_rate) == (3, 6, 48000)
    samples, rate = read_wav_samples(path)
    assert rate == 48000 and samples.shape == (6, 1)
    assert samples[3, 0] == pytest.approx(1.0, abs=1e-6) and samples[4, 0] == -1.0
    canonical = canonical_wav_bytes(path)
    out = np.frombuffer(canonical[44:], dtype="<i2")
    assert out.tolist() == [0, 1, -1, 32767, -32768, 1000]


def test_write_wav_refuses_to_clip_and_round_trips(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clip"):
        write_wav(tmp_path / "loud.wav", np.array([0.0, 1.2, 0.0]), SR)
    with pytest.raises(ValueError):
        write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]), SR)
    x = np.column_stack([tone(1000), -tone(1000)])
    write_wav(tmp_path / "ok.wav", x, SR)
    data = (tmp_path / "ok.wav").read_bytes()
    assert data[12:16] == b"fmt " and data[36:40] == b"data" and len(data) == 44 + 4000
    y, rate = read_wav_samples(tmp_path / "ok.wav")
    assert rate == SR and y.dtype == np.float32
    assert np.max(np.abs(y - x)) < 1e-4
    assert np.array_equal(y[:, 1], -y[:, 0])
