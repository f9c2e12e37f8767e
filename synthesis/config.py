"""A run's config: the shared sections plus each registered condition's own, loaded and checked.

One JSON or YAML file, or the name of a shipped config: `load_config("tiny")` resolves to
`synthesis/configs/tiny.json`. Every section is a dataclass so that a typo in a config file is an
error, not a silently ignored key. The shared sections (models, video, audio, generation,
adapter training) are in synthesis.sections; a condition's own section (`gan`, `score_render`,
...) is declared by the condition in its module and found here through the conditions registry,
so this module names no condition.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from synthesis.conditions import CONDITIONS, SECTIONS
from synthesis.sections import (
    ENCODER_FAMILIES,
    MUSICGEN_FAMILIES,
    AudioConfig,
    ConfigError,
    GenerationConfig,
    ModelSpec,
    TrainConfig,
    VideoConfig,
)

SHIPPED_CONFIGS = pathlib.Path(__file__).parent / "configs"


@dataclass
class RunConfig:
    """The sections every run has, whatever its conditions."""

    name: str
    fit_for_studies: bool
    encoder: ModelSpec
    musicgen: ModelSpec
    clip: ModelSpec  # zero-shot labeller for text_bridge
    conditions: list[str] = field(default_factory=lambda: ["reference", "vit_adapter"])
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    labels: dict[str, list[str]] = field(default_factory=dict)  # text_bridge vocabularies
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_clashes = sorted(set(SECTIONS) & {f.name for f in dataclasses.fields(RunConfig)})
if _clashes:
    raise TypeError(f"conditions declare config sections named like shared ones: {_clashes}")

# The shared sections, then one field per registered condition section (config.gan, ...).
SynthesisConfig = dataclasses.make_dataclass(
    "SynthesisConfig",
    [(key, section, field(default_factory=section)) for key, section in SECTIONS.items()],
    bases=(RunConfig,),
    namespace={"__module__": __name__, "__doc__": "A run's whole config."},
)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    # A field whose type is one of these sections is built (and checked) as one, at any depth.
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, f"{where}.{key}")
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from error


def config_from_dict(data: dict[str, Any]) -> SynthesisConfig:
    """A SynthesisConfig from a config file's mapping; ConfigError says what is wrong."""
    config = _build(SynthesisConfig, data, "config")
    if config.encoder.family not in ENCODER_FAMILIES:
        raise ConfigError(f"encoder.family must be one of {ENCODER_FAMILIES}")
    if config.musicgen.family not in MUSICGEN_FAMILIES:
        raise ConfigError(f"musicgen.family must be one of {MUSICGEN_FAMILIES}")
    config.generation.check("generation")
    for key in SECTIONS:
        getattr(config, key).check(key)
    unknown = sorted(set(config.conditions) - set(CONDITIONS))
    if unknown:
        raise ConfigError(f"unknown conditions {unknown}; registered: {sorted(CONDITIONS)}")
    return config


def load_config(name_or_path: str | pathlib.Path) -> SynthesisConfig:
    """Load a config file, or a shipped config by name (`tiny`, `musicgen-small`)."""
    path = pathlib.Path(name_or_path)
    if not path.exists():
        shipped = SHIPPED_CONFIGS / f"{name_or_path}.json"
        if not shipped.exists():
            available = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.json"))
            raise ConfigError(
                f"no config file {path} and no shipped config of that name {available}"
            )
        path = shipped
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    config = config_from_dict(data)
    if path.resolve().parent != SHIPPED_CONFIGS.resolve():
        resolve_relative_paths(config, path.resolve().parent)
    return config


def _path_fields(section: Any, keys: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(keys from the config's top, "file" or "model") of every field that names a path."""
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            yield from _path_fields(value, (*keys, item.name))
        elif "path" in item.metadata:
            yield (*keys, item.name), item.metadata["path"]


def resolve_relative_paths(config: SynthesisConfig, folder: pathlib.Path) -> None:
    """Makes the relative paths of a config file relative to the file's folder, in place.

    A config kept beside its checkpoints (`checkpoint: checkpoints/adapter.safetensors`) then
    works from any current directory. A model `path` is resolved only when that folder exists
    there: otherwise it is taken as a Hugging Face hub id (`facebook/musicgen-small`). Shipped
    configs are not resolved: their paths are relative to the directory the command runs in.
    """
    for keys, kind in _path_fields(config):
        section = config
        for key in keys[:-1]:
            section = getattr(section, key)
        value = getattr(section, keys[-1])
        if not value or pathlib.Path(value).is_absolute():
            continue
        candidate = folder / value
        if kind == "file" or candidate.exists():
            setattr(section, keys[-1], str(candidate))


def portable_config(config: SynthesisConfig) -> dict[str, Any]:
    """The config as the manifest records it: no path of this machine in it.

    Files (checkpoints, the SoundFont) keep their name (the manifest's `generator.checkpoints`
    and each clip's provenance identify them by sha256); a model given as a local folder keeps
    the folder's name (its weights are identified by `weights_sha256`); hub ids stay as they are.
    """
    data = json.loads(json.dumps(config.to_dict()))
    for keys, kind in _path_fields(config):
        section = data
        for key in keys[:-1]:
            section = section[key]
        path = section[keys[-1]]
        if path and (
            kind == "file" or pathlib.Path(path).is_absolute() or pathlib.Path(path).exists()
        ):
            section[keys[-1]] = pathlib.PurePath(path).name
    return data


__all__ = [
    "ConfigError",
    "ModelSpec",
    "SynthesisConfig",
    "config_from_dict",
    "load_config",
    "portable_config",
    "resolve_relative_paths",
]
