"""Optional generation backends, imported only when a config asks for them."""

from __future__ import annotations

from typing import Any


class BackendUnavailableError(RuntimeError):
    """An optional backend that is not installed."""


def require_audiocraft() -> Any:
    """Imports audiocraft lazily; a clear error when it is not installed.

    audiocraft is not a dependency of this project (it pins its own torch). The pipeline's own
    generation runs on transformers' MusicGen; this backend is a placeholder for comparing with
    audiocraft's reference implementation and is not exercised by the tests.
    """
    try:
        import audiocraft  # noqa: F401
        from audiocraft.models import MusicGen
    except ImportError as error:
        raise BackendUnavailableError(
            "generation.decoder = 'audiocraft' needs the audiocraft package, which is not "
            "installed (pip install audiocraft, in an environment whose torch it supports). "
            "Use generation.decoder = 'fast' for transformers' MusicGen."
        ) from error
    raise BackendUnavailableError(
        "audiocraft is installed, but this pipeline's conditions (adapter states, CLIP prompts) "
        f"are wired to transformers' MusicGen only; audiocraft's {MusicGen.__name__} is not used."
    )
