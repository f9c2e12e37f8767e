"""nginx in front of the app as deploy/ configures it for media (MEDIA_ACCEL_REDIRECT): a minimal
nginx.conf around deploy/'s media templates, started in front of a werkzeug server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import serve  # noqa: E402 - scripts/serve.py: the deploy/ templates rendered as `make serve` does

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin")
PREFIX = "/_media_internal/"


def accel(app, tmp_path: Path, on: bool = True, direct: bool = False) -> None:
    """Media through nginx (`on`); `direct`: MEDIA_DIRECT, which needs the throttle in nginx."""
    app.config.update(
        MEDIA_ACCEL_REDIRECT=PREFIX if on else None,
        MEDIA_RENDITIONS_DIR=str(tmp_path / "renditions"),
        MEDIA_ACCESS_LOG=str(tmp_path / "media.log"),
        MEDIA_DIRECT=on and direct,
    )
    if on and direct:
        app.config["MEDIA_THROTTLE_IN_PROXY"] = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_nginx(folder: Path, port: int, upstream_port: int, renditions: Path, log: Path):
    """A minimal nginx.conf around deploy/'s media templates (rendered as scripts/serve.py
    renders them for `make serve`)."""
    media = serve.MediaAccel(PREFIX, renditions, log)
    serve.media_includes(folder, media, f"http://127.0.0.1:{upstream_port}")
    temp = folder / "temp"
    temp.mkdir()
    (folder / "nginx.conf").write_text(
        f"""
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
    include {folder}/nginx-media-log.conf;
    server {{
        listen 127.0.0.1:{port};
        include {folder}/nginx-media.conf;
        location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }}
    }}
}}
"""
    )


@contextmanager
def nginx_in_front(app, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(nginx's port, the app server's port)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    folder = tmp_path / "nginx"
    folder.mkdir()
    port = free_port()
    (tmp_path / "renditions").mkdir(exist_ok=True)
    render_nginx(folder, port, server.server_port, tmp_path / "renditions", tmp_path / "media.log")
    conf = str(folder / "nginx.conf")
    command = [NGINX, "-p", str(folder), "-c", conf, "-g", "daemon off; master_process off;"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.stderr.read().decode()) from None
                time.sleep(0.05)
        yield port, server.server_port
    finally:
        process.terminate()
        process.wait(10)
        server.shutdown()
        thread.join(10)
