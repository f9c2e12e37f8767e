"""Study designs: the YAML/JSON format of docs/design-format.md, checked and normalized.

`normalize_design` fills every option's default, so the stored design says exactly what ran, and
`design_problems` lists everything wrong with it at once. Both are pure.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from .catalog import Catalog
from .trial_types import COMMON_BLOCK_OPTIONS, all_trial_types, get_trial_type

DESIGN_FORMAT = "sightsound-design/1"
TOP_LEVEL_KEYS = {"format", "slug", "title", "stimulus_set", "completion", "blocks"}
COMPLETION_KEYS = {"code", "redirect_url", "max_completed"}
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
BLOCK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


class DesignError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("invalid study design:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def read_design_file(path: Path) -> dict[str, Any]:
    """Parse a YAML or JSON design file (JSON is YAML, so one parser reads both)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DesignError([f"cannot read {path}: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise DesignError([f"{path} is not valid YAML/JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise DesignError([f"{path}: a design is a mapping with 'blocks'"])
    return data


def normalize_design(data: dict[str, Any]) -> dict[str, Any]:
    """The design with every block option present (defaults filled in). Raises DesignError."""
    problems = []
    design = copy.deepcopy(data)
    unknown = set(design) - TOP_LEVEL_KEYS
    if unknown:
        problems.append(f"unknown top-level keys: {sorted(unknown)}")
    if design.get("format", DESIGN_FORMAT) != DESIGN_FORMAT:
        problems.append(f"'format' must be {DESIGN_FORMAT!r}")
    design["format"] = DESIGN_FORMAT
    for key in ("slug", "title", "stimulus_set"):
        if not isinstance(design.get(key), str) or not design[key].strip():
            problems.append(f"'{key}' is required")
    if isinstance(design.get("slug"), str) and not SLUG.match(design["slug"]):
        problems.append("'slug' must be 2-63 lowercase letters, digits or '-'")
    completion = design.setdefault("completion", {}) or {}
    design["completion"] = completion
    if not isinstance(completion, dict) or set(completion) - COMPLETION_KEYS:
        problems.append(f"'completion' takes only {sorted(COMPLETION_KEYS)}")
    else:
        completion.setdefault("code", None)
        completion.setdefault("redirect_url", None)
        completion.setdefault("max_completed", None)
        cap = completion["max_completed"]
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            problems.append("'completion.max_completed' must be a whole number >= 1 or null")
        url = completion["redirect_url"]
        if url is not None and not (isinstance(url, str) and url.startswith("https://")):
            problems.append("'completion.redirect_url' must be an https:// URL")
    blocks = design.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        problems.append("'blocks' must be a non-empty list")
        raise DesignError(problems)
    types = all_trial_types()
    seen_ids = set()
    normalized_blocks = []
    for position, block in enumerate(blocks):
        where = f"block {position + 1}"
        if not isinstance(block, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        block_type = block.get("type")
        if block_type not in types:
            problems.append(f"{where}: unknown type {block_type!r} (known: {sorted(types)})")
            continue
        allowed = COMMON_BLOCK_OPTIONS | types[block_type].options
        unknown = set(block) - set(allowed)
        if unknown:
            problems.append(f"{where} ({block_type}): unknown options {sorted(unknown)}")
        block_id = block.get("id")
        if not isinstance(block_id, str) or not BLOCK_ID.match(block_id):
            problems.append(f"{where}: 'id' must be 1-40 letters, digits, '_' or '-'")
        elif block_id in seen_ids:
            problems.append(f"{where}: duplicate block id {block_id!r}")
        seen_ids.add(block_id)
        filled = {key: copy.deepcopy(default) for key, default in allowed.items()}
        filled.update(block)
        normalized_blocks.append(filled)
    design["blocks"] = normalized_blocks
    debriefs = [i for i, b in enumerate(normalized_blocks) if b["type"] == "debrief"]
    if debriefs and debriefs != [len(normalized_blocks) - 1]:
        problems.append("a 'debrief' block may appear once, as the last block")
    if problems:
        raise DesignError(problems)
    return design


def design_problems(design: dict[str, Any], catalog: Catalog) -> list[str]:
    """Problems of a normalized design against a stimulus catalog."""
    problems = []
    for block in design["blocks"]:
        problems.extend(get_trial_type(block["type"]).validate_block(block, catalog))
    return problems


def validated_design(data: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    design = normalize_design(data)
    problems = design_problems(design, catalog)
    if problems:
        raise DesignError(problems)
    return design


def with_defaults(block: dict[str, Any]) -> dict[str, Any]:
    """A stored block with any option it predates filled with today's default."""
    options = COMMON_BLOCK_OPTIONS | get_trial_type(block["type"]).options
    return {key: copy.deepcopy(value) for key, value in options.items()} | block


def block_by_id(design: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in design["blocks"] if b["id"] == block_id)
