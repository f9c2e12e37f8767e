"""Study designs: the YAML/JSON format of docs/design-format.md, checked and normalized.

`normalize_design` fills every option's default, so the stored design says exactly what ran, and
`design_problems` lists everything wrong with it at once. Both are pure.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from .catalog import Catalog
from .trial_types import COMMON_BLOCK_OPTIONS, all_trial_types, get_trial_type, quoted_names

DESIGN_FORMAT = "sightsound-design/1"
TOP_LEVEL_KEYS = {"format", "slug", "title", "stimulus_set", "completion", "blocks"}
# One completion code (and optional redirect) per outcome, as Prolific takes them: finished,
# screened out (a failed screening block with exclude_on_fail), failed attention checks.
COMPLETION_OUTCOMES = {
    "code": "redirect_url",
    "screened_out_code": "screened_out_redirect_url",
    "failed_attention_code": "failed_attention_redirect_url",
}
COMPLETION_KEYS = {*COMPLETION_OUTCOMES, *COMPLETION_OUTCOMES.values(), "max_completed"}
# Codes go into redirect URLs ({code}) and the studies table (64 characters): URL-safe text.
COMPLETION_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
BLOCK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


class DesignError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("invalid study design:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


# Limits on what a design may be, checked when it is parsed (every way in: the web import, the
# designer's design.json, `flask create-study`). A real design is a few kilobytes, five levels
# deep; these leave room for that and refuse what would only cost memory, time or recursion.
MAX_DESIGN_BYTES = 256 * 1024  # the web's MAX_CONTENT_LENGTH (64 KiB) is lower still
MAX_DESIGN_DEPTH = 20
# Characters per free-text value, by option name; any other text value (condition names, codes,
# scale names, options a type adds later) gets DEFAULT_TEXT_CAP.
TEXT_CAPS = {
    "title": 200,
    "stimulus_set": 200,
    "question": 500,
    "instructions": 5_000,
    "text": 20_000,  # consent and debrief Markdown
    "redirect_url": 2_000,  # and every other *_redirect_url
}
DEFAULT_TEXT_CAP = 200


def read_design_file(path: Path) -> dict[str, Any]:
    """Parse a YAML or JSON design file (JSON is YAML, so one parser reads both)."""
    try:
        if path.stat().st_size > MAX_DESIGN_BYTES:
            raise DesignError([f"{path}: a design file is at most {MAX_DESIGN_BYTES} bytes"])
        text = path.read_bytes()
    except OSError as exc:
        raise DesignError([f"cannot read {path}: {exc.strerror}"]) from exc
    return parse_design_yaml(text, source=str(path))


class _DesignLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing anchors and aliases and nesting beyond MAX_DESIGN_DEPTH.

    Aliases let a few hundred bytes expand into megabytes ("billion laughs"), and a design
    never needs them. The composer is the one recursive stage of PyYAML, so counting its depth
    here stops a deep document before Python's recursion limit is reached.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._design_depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise DesignError(
                [f"line {line}: YAML anchors and aliases (&name, *name) are not accepted"]
            )
        if self._design_depth >= MAX_DESIGN_DEPTH:
            raise DesignError([f"line {line}: nested more than {MAX_DESIGN_DEPTH} levels deep"])
        self._design_depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._design_depth -= 1


def parse_design_yaml(text: bytes | str, *, source: str = "the design") -> dict[str, Any]:
    """A design mapping from YAML or JSON text, or DesignError saying what is wrong.

    The one parser for designs: size, anchors, depth and value types are checked here.
    """
    if len(text) > MAX_DESIGN_BYTES:
        raise DesignError([f"{source}: a design is at most {MAX_DESIGN_BYTES} bytes"])
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = yaml.load(text, Loader=_DesignLoader)  # noqa: S506 - a SafeLoader subclass
    except DesignError as exc:  # the loader's refusals (a ValueError too): say where
        raise DesignError([f"{source}, {problem}" for problem in exc.problems]) from None
    except UnicodeDecodeError as exc:
        raise DesignError([f"{source} is not UTF-8 text"]) from exc
    except yaml.YAMLError as exc:
        raise DesignError([f"{source} is not valid YAML/JSON: {exc}"]) from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise DesignError([f"{source}: {exc}"]) from exc
    return _checked_shape(data, source)


def parse_design_json(body: bytes | str, *, source: str = "the request") -> Any:
    """A JSON request body (the designer's), checked like a design file: size, depth, values.

    json.loads itself recurses, so a deeply nested body raises RecursionError; that, like
    NaN and Infinity (which PostgreSQL's JSON type refuses), is a DesignError here.
    """
    if len(body) > MAX_DESIGN_BYTES:
        raise DesignError([f"{source}: a design is at most {MAX_DESIGN_BYTES} bytes"])

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number a design can hold")

    try:
        data = json.loads(body, parse_constant=refuse_constant)
    except RecursionError as exc:
        raise DesignError([f"{source}: nested more than {MAX_DESIGN_DEPTH} levels deep"]) from exc
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, refused constants
        raise DesignError([f"{source} is not valid JSON: {exc}"]) from exc
    return _checked_shape(data, source, require_mapping=False)


def _checked_shape(data: Any, source: str, *, require_mapping: bool = True) -> Any:
    """`data` if it is plain JSON-like values nested at most MAX_DESIGN_DEPTH deep, with text keys
    and finite numbers (what the database's JSON column can store); else DesignError."""
    if require_mapping and not isinstance(data, dict):
        raise DesignError([f"{source}: a design is a mapping with 'blocks'"])
    stack = [(data, 1)]
    while stack:  # iterative: a walk must not recurse on what it is checking for depth
        value, depth = stack.pop()
        if depth > MAX_DESIGN_DEPTH:
            raise DesignError([f"{source}: nested more than {MAX_DESIGN_DEPTH} levels deep"])
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise DesignError([f"{source}: every key must be text"])
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise DesignError([f"{source}: {value} is not a number a design can hold"])
        elif value is not None and not isinstance(value, str | int | float):
            # A YAML date or binary value: quote it to make it text.
            raise DesignError(
                [f"{source}: {type(value).__name__} values are not accepted (quote text)"]
            )
    return data


def _text_cap(key: str) -> int:
    # Every completion outcome has its own redirect URL (screened_out_redirect_url, ...).
    return TEXT_CAPS.get("redirect_url" if key.endswith("redirect_url") else key, DEFAULT_TEXT_CAP)


def text_length_problems(design: dict[str, Any]) -> list[str]:
    """Every text value longer than its cap (TEXT_CAPS by option name, else DEFAULT_TEXT_CAP),
    named as the other problems name it: "block 3: 'instructions' ..."."""
    problems = []
    blocks = design.get("blocks")
    blocks = blocks if isinstance(blocks, list) else []
    places = [("", "", {k: v for k, v in design.items() if k != "blocks"})]
    places += [(f"block {i}: ", "", block) for i, block in enumerate(blocks, 1)]
    stack: list[tuple[str, str, str, Any]] = [(where, path, "", v) for where, path, v in places]
    while stack:
        where, path, key, value = stack.pop()
        if isinstance(value, dict):
            for name, item in value.items():
                stack.append((where, f"{path}.{name}" if path else str(name), str(name), item))
        elif isinstance(value, list):
            stack.extend((where, f"{path}[{i}]", key, item) for i, item in enumerate(value))
        elif isinstance(value, str):
            cap = _text_cap(key)
            if len(value) > cap:
                problems.append(
                    f"{where}'{path}' is {len(value)} characters long; at most {cap} are allowed"
                )
    return sorted(problems)


def normalize_design(data: dict[str, Any]) -> dict[str, Any]:
    """The design with every block option present (defaults filled in). Raises DesignError."""
    problems = []
    design = copy.deepcopy(data)
    unknown = set(design) - TOP_LEVEL_KEYS
    if unknown:
        problems.append(f"unknown top-level keys: {quoted_names(sorted(unknown))}")
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
        for key in sorted(COMPLETION_KEYS):
            completion.setdefault(key, None)
        cap = completion["max_completed"]
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            problems.append("'completion.max_completed' must be a whole number >= 1 or null")
        for code_key, url_key in COMPLETION_OUTCOMES.items():
            code = completion[code_key]
            if code is not None and not (isinstance(code, str) and COMPLETION_CODE.match(code)):
                problems.append(
                    f"'completion.{code_key}' must be 1-64 letters, digits, '-', '_' or '.' "
                    "(or null: generated)"
                )
            url = completion[url_key]
            if url is not None and not (isinstance(url, str) and url.startswith("https://")):
                problems.append(f"'completion.{url_key}' must be an https:// URL")
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
            # (at most ten named: a body can hold thousands)
            problems.append(
                f"{where} ({block_type}): unknown options {quoted_names(sorted(unknown))}"
            )
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
    problems.extend(text_length_problems(design))
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
