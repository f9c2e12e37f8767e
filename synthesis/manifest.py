"""The stimulus set manifest: validation against stimuli/manifest.schema.json, and atomic writes."""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

import synthesis

SCHEMA_PATH = pathlib.Path(__file__).resolve().parents[1] / "stimuli" / "manifest.schema.json"


def code_version() -> str:
    """The package version, plus the git commit when the code runs from a checkout."""
    version = synthesis.__version__
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=pathlib.Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}" if commit else version


def load_schema(path: pathlib.Path = SCHEMA_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def schema_problems(manifest: dict[str, Any], schema_path: pathlib.Path = SCHEMA_PATH) -> list[str]:
    """Everything the JSON Schema rejects, as readable lines (empty when valid)."""
    import jsonschema

    if not schema_path.exists():
        return [f"schema not found at {schema_path}: cannot validate"]
    validator = jsonschema.Draft202012Validator(
        load_schema(schema_path), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    ]


def write_manifest(folder: pathlib.Path, manifest: dict[str, Any]) -> pathlib.Path:
    path = folder / "manifest.json"
    temporary = folder / "manifest.json.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def read_manifest(folder: pathlib.Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a damaged manifest: start over (finished audio is re-checked by hash)
