"""Blinding audit on a fresh demo study (SQLite in a temporary folder), or on any database.

    .venv/bin/python scripts/blinding_audit.py --participants 40
    DATABASE_URL=postgresql://... flask --app study_app audit-blinding my-study   # a real study

Plays audit participants through the study as a cheating participant would, and reports whether
anything their browsers could observe (URLs, headers, sizes, WAV headers, timing, repeated
bytes) predicts a clip's condition better than chance (study_app/audit.py). Exit status 1 on a
leak.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from demo_set import build_demo_set
    from study_app import create_app
    from study_app.audit import audit_study
    from study_app.design import read_design_file
    from study_app.extensions import db
    from study_app.models import Researcher
    from study_app.services import create_study, import_stimulus_set

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=24)
    parser.add_argument("--permutations", type=int, default=999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sightsound-audit-") as folder:
        tmp = Path(folder)
        build_demo_set(tmp / "set")
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'audit.sqlite'}",
                "MEDIA_DIR": str(tmp / "media"),
                "SECRET_KEY": "audit",
            }
        )
        with app.app_context():
            db.create_all()
            import_stimulus_set(tmp / "set", tmp / "media")
            owner = Researcher(email="audit@example.invalid")
            owner.set_password("not-used-here")
            db.session.add(owner)
            db.session.commit()
            slug = create_study(read_design_file(REPO / "stimuli" / "demo_study.yaml"), owner).slug
        report = audit_study(app, slug, args.participants, args.permutations, args.seed)
        with app.app_context():
            db.engine.dispose()
    print(report.text())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 1 if report.leaks else 0


if __name__ == "__main__":
    raise SystemExit(main())
