"""What a researcher does, through Flask's test client: log in, and build a study in the designer;
and a catalog of made-up clips for design checks (flow.py has the participant's steps)."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from study_app.catalog import Catalog


def logged_in(app: Flask, email: str, password: str) -> FlaskClient:
    """A new test client, logged in as `email`."""
    client = app.test_client()
    response = client.post("/researcher/login", data={"email": email, "password": password})
    assert response.status_code == 302
    return client


def two_block_design(title: str = "Two blocks", slug: str = "two-blocks") -> dict:
    """A consent block and a two-condition ABX block on the demo set."""
    return {
        "slug": slug,
        "title": title,
        "stimulus_set": "demo",
        "completion": {"code": "TWO-1", "redirect_url": None, "max_completed": None},
        "blocks": [
            {"id": "consent", "type": "consent", "text": "Please agree."},
            {
                "id": "abx",
                "type": "abx",
                "conditions": ["sine_resynthesis", "shuffled_notes"],
                "trials_per_participant": 2,
                "catch_trials": 1,
            },
        ],
    }


def build_in_designer(client: FlaskClient, design: dict) -> str:
    """Create `design` as a new draft through the designer's pages; its slug."""
    response = client.post(
        "/researcher/studies/new",
        data={"stimulus_set": "demo", "title": design["title"], "slug": design["slug"]},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    state = client.get(f"/researcher/studies/{design['slug']}/design.json").get_json()
    assert state["editable"] and "abx" in state["types"]
    assert "reference" in state["conditions"]
    saved = client.post(
        f"/researcher/studies/{design['slug']}/design.json", json={"design": design}
    )
    assert saved.status_code == 200, saved.get_json()
    return design["slug"]


def catalog(sources: int, segments_per_source: int = 1,
            conditions: tuple[str, ...] = ("reference", "gen_a", "gen_b")) -> Catalog:
    """`sources` sources of `segments_per_source` 3 s segments, a clip per condition."""
    return Catalog.from_clips(
        (f"s{s}_seg{g}", f"s{s}", condition, f"clip-{s}-{g}-{condition}", 3.0)
        for s in range(sources) for g in range(segments_per_source) for condition in conditions
    )
