"""Fingerprinted static files: a participant's browser fetches each stylesheet and script once
per study, not once per page.

`url_for('static', filename='style.css')` gives `/static/<fingerprint>/style.css`, the
fingerprint being the first 8 hex digits of the file's SHA-256, computed once at start-up. Such
a URL always names the same bytes, so its response is `Cache-Control: public, max-age=31536000,
immutable`: no revalidation (the 304s that were a third of a participant's requests). A new
release changes the URL of every file whose content changed, and only those.

nginx serves the same URLs from a collected copy (`collect`, run by scripts/serve.py), one
folder per fingerprint, so a URL of another release that the copy does not hold falls through
to the app; the app serves a URL whose fingerprint is not the current one with `no-cache`,
never pinning a year of the wrong bytes under it. Plain `/static/<file>` still works (the
favicon some tools ask for), revalidated on every use as before.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from flask import Flask

IMMUTABLE = "public, max-age=31536000, immutable"
FINGERPRINT_LENGTH = 8


def fingerprints(folder: Path) -> dict[str, str]:
    """{path relative to `folder` (with /): fingerprint} for every file under `folder`."""
    manifest = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            manifest[path.relative_to(folder).as_posix()] = digest[:FINGERPRINT_LENGTH]
    return manifest


def collect(folder: Path, dest: Path) -> dict[str, str]:
    """Copy every file of `folder` to `dest/static/<fingerprint>/<path>` (the URL's path under
    `dest`, for nginx's `root`); returns the manifest. Folders of earlier releases stay."""
    manifest = fingerprints(folder)
    for name, fingerprint in manifest.items():
        target = dest / "static" / fingerprint / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, target)
    return manifest


def install(app: Flask) -> None:
    """Route `/static/<fingerprint>/<path>` (and plain `/static/<path>`) for `app`, whose Flask
    was made with `static_folder=None` so that these rules are the static endpoint's only ones
    and the fingerprinted one comes first when URLs are built."""
    folder = Path(app.root_path) / "static"
    app.static_folder = str(folder)
    manifest = fingerprints(folder)

    def current() -> dict[str, str]:
        # Under `flask run --debug` a file edited without a restart gets a new URL at once.
        return fingerprints(folder) if app.debug else manifest

    def static(filename: str, fingerprint: str | None = None) -> Any:
        response = app.send_static_file(filename)
        if fingerprint is None:
            return response  # plain /static/<file>: Flask's revalidated default
        if current().get(filename) == fingerprint:
            response.headers["Cache-Control"] = IMMUTABLE
        else:  # another release's URL: serve, but let no cache keep these bytes under it
            response.headers["Cache-Control"] = "no-cache"
        return response

    app.add_url_rule(
        f"/static/<string(length={FINGERPRINT_LENGTH}):fingerprint>/<path:filename>",
        endpoint="static",
        view_func=static,
    )
    app.add_url_rule("/static/<path:filename>", endpoint="static", view_func=static)

    @app.url_defaults
    def add_fingerprint(endpoint: str, values: dict[str, Any]) -> None:
        if endpoint == "static" and "fingerprint" not in values:
            fingerprint = current().get(values.get("filename", ""))
            if fingerprint:
                values["fingerprint"] = fingerprint
