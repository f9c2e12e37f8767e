"""The README's command-line section runs as written, in a fresh shell where nothing but the
virtual environment is set up: its commands are taken from README.md and run by bash in a copy of
the app (so the copy's instance/ folder, database and media are its own, not the checkout's)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import DEMO_DESIGN, REPO_ROOT

README = REPO_ROOT / "README.md"
VENV = REPO_ROOT / ".venv"


def command_line_section() -> list[str]:
    """The lines of the sh block after "On the command line" in README.md."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index("On the command line") :]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block, "README.md: no sh block in the command-line section"
    return block.group(1).splitlines()


def test_the_readme_says_to_use_the_virtual_environment():
    lines = [line.split("#")[0].strip() for line in command_line_section()]
    assert "make env" in lines
    activate = lines.index(". .venv/bin/activate")
    first_flask = next(i for i, line in enumerate(lines) if line.startswith("flask "))
    assert activate < first_flask


def test_the_readme_commands_run_as_written(tmp_path, demo_set_dir):
    root = tmp_path / "checkout"
    # The app as a checkout has it: `FLASK_APP=study_app` imports ./study_app, whose instance/
    # folder is ./instance. (The checkout's own would be shared with whoever runs the demo.)
    shutil.copytree(
        REPO_ROOT / "study_app",
        root / "study_app",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (root / "stimuli").mkdir()
    shutil.copy(REPO_ROOT / "stimuli" / "manifest.schema.json", root / "stimuli")
    (root / ".venv").symlink_to(VENV)  # what `make env` made
    # What the commands name: a stimulus set and a design of the user's own.
    shutil.copytree(demo_set_dir, root / "stimuli" / "my_set")
    design = yaml.safe_load(DEMO_DESIGN.read_text())
    design["slug"] = "my-study"
    (root / "my_design.yaml").write_text(yaml.safe_dump(design))

    lines = command_line_section()
    # `make env` has been run (this test runs in that environment); running it here would
    # reinstall the app from the copy into the shared environment.
    script = "\n".join(line for line in lines if not line.startswith("make "))
    venv_bin = str(VENV / "bin")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "FLASK_APP", "DATABASE_URL", "PYTHONPATH", "SECRET_KEY")
        and not key.startswith("SIGHTSOUND_")
    }
    # a fresh shell: the virtual environment is not on PATH until the README activates it
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(venv_bin)
    )
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=root,
        env=env,
        # create-researcher asks for the password twice; with no terminal (a new session has
        # none) getpass reads it from standard input, as it would from a pipe
        input="a-long-password\na-long-password\n",
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "imported stimulus set 'demo'" in output
    assert "researcher me@lab.org ready" in output
    assert "study 'my-study' created" in output
    assert (root / "instance" / "sightsound.sqlite").exists()
    exported = {p.name for p in (root / "exports" / "my-study").iterdir()}
    assert {"responses.csv", "study.json"} <= exported

    # The password typed at the prompt is the researcher's. (`python -c` in the copy imports
    # the copy's app, with the copy's instance/.)
    check = (
        "from study_app import create_app\n"
        "from study_app.extensions import db\n"
        "from study_app.models import Researcher\n"
        "with create_app().app_context():\n"
        "    me = db.session.query(Researcher).filter_by(email='me@lab.org').one()\n"
        "    print(me.check_password('a-long-password'))\n"
    )
    login = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", check],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert login.stdout.strip() == "True", login.stdout + login.stderr
