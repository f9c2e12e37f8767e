"""Issue 13, "trust what a participant's answer says", for researchers' inputs and outputs:
deeply nested and alias-bombed designs, over-long texts, login guessing from one client or
many, open redirects through `next`, script links in consent Markdown, and formulas smuggled
into responses.csv. Each gets a specific refusal or is made harmless; none is a 500."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from flow import run_to_end, start
from sqlalchemy import func, select

from study_app import render_markdown
from study_app.auth import MAX_CLIENT_FAILURES, MAX_FAILURES, safe_next
from study_app.design import (
    DEFAULT_TEXT_CAP,
    MAX_DESIGN_BYTES,
    MAX_DESIGN_DEPTH,
    TEXT_CAPS,
    DesignError,
    normalize_design,
    parse_design_json,
    parse_design_yaml,
    read_design_file,
)
from study_app.export import _csv_text
from study_app.extensions import db
from study_app.models import LoginFailure, Participant, Study

DEEP_YAML = "[" * 5000 + "]" * 5000
DEEP_JSON = "[" * 3000 + "]" * 3000
# 685 bytes in the bug report; expanded by PyYAML this is 10**7 copies of "lol".
BILLION_LAUGHS = """\
format: sightsound-design/1
slug: laughs
title: Laughs
stimulus_set: demo
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
blocks:
  - {id: consent, type: consent, text: hi, instructions: *g}
"""


def small_design(**changes) -> dict:
    design = {
        "slug": "small",
        "title": "Small",
        "stimulus_set": "demo",
        "blocks": [
            {"id": "consent", "type": "consent", "text": "Please agree."},
            {"id": "abx", "type": "abx", "conditions": ["sine_resynthesis"]},
        ],
    }
    return design | changes


def login(client, email: str, password: str, address: str = "127.0.0.1", query: str = ""):
    return client.post(
        f"/researcher/login{query}",
        data={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def studies(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Study.id)))


# Nesting, aliases, size: the one design parser ---------------------------------------------


def test_deep_yaml_is_a_design_error_not_a_recursion_error():
    with pytest.raises(DesignError, match=f"nested more than {MAX_DESIGN_DEPTH} levels deep"):
        parse_design_yaml(DEEP_YAML)
    block_style = "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 40))
    with pytest.raises(DesignError, match="line 20: nested more than"):
        parse_design_yaml(block_style)


def test_deep_json_is_a_design_error_not_a_recursion_error():
    for body in (DEEP_JSON, "[" * (MAX_DESIGN_DEPTH + 1) + "]" * (MAX_DESIGN_DEPTH + 1)):
        with pytest.raises(DesignError, match="nested more than"):
            parse_design_json(body)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BILLION_LAUGHS, "anchors and aliases"),
        ("a: &x 1\nb: 2\n", "anchors and aliases"),  # an anchor alone is refused too
        ("title: .nan\n", "nan is not a number"),
        ("title: .inf\n", "inf is not a number"),
        ("title: 2024-01-01\n", "date values are not accepted"),
        ("1: x\n", "every key must be text"),
        ("- a\n", "a design is a mapping"),
        ("title: " + "9" * 5000 + "\n", "digits"),
        (b"title: \xff\n", "not UTF-8"),
        ("title: [unclosed\n", "not valid YAML/JSON"),
    ],
)
def test_yaml_designs_that_are_refused(text, message):
    with pytest.raises(DesignError, match=message):
        parse_design_yaml(text)


def test_json_constants_and_junk_are_refused():
    for body, message in (
        ('{"design": NaN}', "NaN is not a number"),
        ('{"design": -Infinity}', "Infinity is not a number"),
        ("{", "not valid JSON"),
        (b"\xff", "not valid JSON"),
    ):
        with pytest.raises(DesignError, match=message):
            parse_design_json(body)


def test_oversized_design_text_is_refused():
    with pytest.raises(DesignError, match=f"at most {MAX_DESIGN_BYTES} bytes"):
        parse_design_yaml("#" * (MAX_DESIGN_BYTES + 1))


def test_read_design_file_refuses_with_clear_design_errors(tmp_path: Path):
    cases = {
        "deep.yaml": (DEEP_YAML, "nested more than"),
        "laughs.yaml": (BILLION_LAUGHS, "anchors and aliases"),
        "huge.yaml": ("#" * (MAX_DESIGN_BYTES + 1), "at most"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DesignError, match=message) as caught:
            read_design_file(path)
        assert str(path) in str(caught.value)


def test_the_shipped_designs_still_parse():
    root = Path(__file__).resolve().parents[2]
    for path in [*root.glob("stimuli/*.yaml"), *root.glob("tests/data/*.yaml")]:
        assert isinstance(read_design_file(path), dict), path


def test_web_import_refuses_deep_and_aliased_yaml_with_400(app, owner):
    before = studies(app)
    for text, message in (
        (DEEP_YAML, "nested more than 20 levels deep"),
        (BILLION_LAUGHS, "YAML anchors and aliases (&amp;name, *name) are not accepted"),
        ("- just a list\n", "a design is a mapping"),
    ):
        response = owner.post(
            "/researcher/studies/import",
            data={"design": (io.BytesIO(text.encode()), "design.yaml")},
            content_type="multipart/form-data",
        )
        assert response.status_code == 400
        assert message in response.get_data(as_text=True)
    assert studies(app) == before


def test_designer_json_refuses_deep_bodies_with_400(app, owner, demo_study):
    url = f"/researcher/studies/{demo_study}/design.json"
    for body in (DEEP_JSON, '{"design": {"title": NaN}}', "not json"):
        response = owner.post(url, data=body, content_type="application/json")
        assert response.status_code == 400, body[:20]
        assert response.get_json()["ok"] is False and response.get_json()["problems"]
    deep = owner.post(url, data=DEEP_JSON, content_type="application/json").get_json()
    assert deep["problems"] == ["the request body: nested more than 20 levels deep"]
    checked = owner.post(
        f"/researcher/studies/{demo_study}/check", data=DEEP_JSON, content_type="application/json"
    )
    assert checked.status_code == 200 and not checked.get_json()["ok"]


# Text caps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ((), "title"),
        ((), "stimulus_set"),
        (("completion",), "redirect_url"),
        (("completion",), "screened_out_redirect_url"),
        (("blocks", 0), "text"),
        (("blocks", 1), "instructions"),
        (("blocks", 1), "title"),
    ],
)
def test_every_free_text_is_capped_with_a_message_naming_it(where, field):
    is_url = field.endswith("redirect_url")
    cap = TEXT_CAPS["redirect_url" if is_url else field]
    design = small_design(completion={"redirect_url": None})
    target = design
    for step in where:
        target = target[step]
    target[field] = "https://" + "x" * cap if is_url else "x" * (cap + 1)
    with pytest.raises(DesignError) as caught:
        normalize_design(design)
    named = [p for p in caught.value.problems if f"{field}' is" in p]
    assert len(named) == 1 and f"at most {cap} are allowed" in named[0]
    if where[:1] == ("blocks",):
        assert named[0].startswith(f"block {where[1] + 1}: ")
    target[field] = "https://x.org" if is_url else "x" * cap
    assert normalize_design(design)  # exactly at the cap is fine


def test_other_text_values_get_the_default_cap():
    design = small_design()
    design["blocks"][1]["conditions"] = ["c" * (DEFAULT_TEXT_CAP + 1)]
    design["completion"] = {"code": "k" * (DEFAULT_TEXT_CAP + 1)}
    problems = " ".join(pytest.raises(DesignError, normalize_design, design).value.problems)
    assert f"block 2: 'conditions[0]' is {DEFAULT_TEXT_CAP + 1} characters long" in problems
    assert "'completion.code' is" in problems


def test_designer_save_names_the_over_long_field(app, owner, demo_study):
    design = small_design(title="t" * 201)
    response = owner.post(f"/researcher/studies/{demo_study}/design.json", json={"design": design})
    assert response.status_code in (409, 422)  # the demo study is open: refused either way
    checked = owner.post(f"/researcher/studies/{demo_study}/check", json={"design": design})
    assert (
        "'title' is 201 characters long; at most 200 are allowed" in checked.get_json()["problems"]
    )


# Login throttle -------------------------------------------------------------------------------


def test_a_strangers_guesses_do_not_lock_the_researcher_out(app, demo_study):
    stranger, researcher = app.test_client(), app.test_client()
    for i in range(MAX_FAILURES):
        assert login(stranger, "owner@example.org", f"guess-{i}", "198.51.100.9").status_code == 401
    # the stranger is stopped, even with the right password ...
    assert login(stranger, "owner@example.org", "owner-password", "198.51.100.9").status_code == (
        429
    )
    # ... while the researcher, from an address that has not failed, gets in
    response = login(researcher, "OWNER@example.org", "owner-password", "203.0.113.5")
    assert response.status_code == 302


def test_one_client_trying_many_emails_is_throttled(app, demo_study):
    client = app.test_client()
    statuses = [
        login(client, f"user{i}@example.org", "guess", "198.51.100.7").status_code
        for i in range(12)
    ]
    assert statuses == [401] * MAX_CLIENT_FAILURES + [429] * (12 - MAX_CLIENT_FAILURES)
    # throttled for any email, a real one with its right password included
    assert login(client, "owner@example.org", "owner-password", "198.51.100.7").status_code == 429
    # another client is not
    assert login(client, "owner@example.org", "owner-password", "203.0.113.5").status_code == 302


def test_a_successful_login_clears_only_that_pairs_count(app, demo_study):
    client = app.test_client()
    for _ in range(MAX_FAILURES - 1):
        assert login(client, "owner@example.org", "typo", "203.0.113.5").status_code == 401
    assert login(client, "owner@example.org", "owner-password", "203.0.113.5").status_code == 302
    with app.app_context():
        keys = db.session.scalars(select(LoginFailure.key)).all()
    # The client's count stays (an account of one's own must not reset it), the pair's is gone.
    assert len(keys) == MAX_FAILURES - 1 and all(k.startswith("client:") for k in keys)
    assert login(client, "owner@example.org", "typo", "203.0.113.5").status_code == 401


def test_long_emails_and_addresses_fit_the_failure_key(app, demo_study):
    client = app.test_client()
    email = "a" * 240 + "@example.org"
    address = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
    assert login(client, email, "guess", address).status_code == 401
    with app.app_context():
        assert max(len(k) for k in db.session.scalars(select(LoginFailure.key))) <= 254


# `next`: redirects stay inside the app --------------------------------------------------------

HOSTILE_NEXT = (
    "https://evil.invalid/x",
    "http:evil.invalid",
    "//evil.invalid/x",
    "///evil.invalid/x",
    "/\\evil.invalid/x",
    "\\\\evil.invalid",
    "/\t/evil.invalid",
    "/%0a/x\r\nLocation: https://evil.invalid",
    "javascript:alert(1)",
    "evil.invalid",
    " /researcher/",
)


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_unsafe_next_values_are_refused(target):
    assert safe_next(target) is None


def test_safe_next_keeps_paths_inside_the_app():
    for target in ("/researcher/", "/researcher/studies/demo/?tab=1#top", "/%2F%2Fevil"):
        assert safe_next(target) == target


def _location(response) -> tuple[str, str]:
    parts = urlsplit(response.headers["Location"])
    return parts.netloc, parts.path


def test_login_follows_only_a_safe_next(app, demo_study):
    for target in HOSTILE_NEXT:
        client = app.test_client()
        response = login(
            client, "owner@example.org", "owner-password", query=f"?next={quote(target)}"
        )
        assert response.status_code == 302
        assert _location(response) in (("", "/researcher/"), ("localhost", "/researcher/"))
    client = app.test_client()
    response = login(
        client, "owner@example.org", "owner-password", query="?next=/researcher/studies/demo/"
    )
    assert _location(response)[1] == "/researcher/studies/demo/"


def test_status_form_next_stays_inside_the_app(app, owner, demo_study):
    for target in HOSTILE_NEXT:
        response = owner.post(
            f"/researcher/studies/{demo_study}/status", data={"status": "", "next": target}
        )
        assert response.status_code == 302
        assert _location(response)[0] in ("", "localhost")
        assert _location(response)[1] == f"/researcher/studies/{demo_study}/"
    response = owner.post(
        f"/researcher/studies/{demo_study}/status",
        data={"status": "", "next": f"/researcher/studies/{demo_study}/dashboard"},
    )
    assert _location(response)[1] == f"/researcher/studies/{demo_study}/dashboard"


# Consent and debrief Markdown -----------------------------------------------------------------

SCRIPT_LINKS = (
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](&#x6A;&#x61;vascript:alert(1))",
    "[x](java&#x09;script:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "[x](VBScript:msgbox(1))",
    "<javascript:alert(1)>",
    "[x][r]\n\n[r]: javascript:alert(1)",
)


@pytest.mark.parametrize("text", SCRIPT_LINKS)
def test_markdown_links_other_than_http_https_mailto_lose_their_target(text):
    html = str(render_markdown(text))
    lowered = html.lower()
    assert "javascript" not in lowered.replace("&lt;javascript", "")
    assert "href" not in lowered and "data:" not in lowered and "vbscript" not in lowered


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src=https://evil.invalid></iframe>",
        '<svg onload="alert(1)">',
    ],
)
def test_raw_html_in_markdown_is_shown_as_text(text):
    html = str(render_markdown(text))
    assert "<script" not in html and "<img" not in html and "<a " not in html
    assert "<iframe" not in html and "<svg" not in html
    assert "&lt;" in html  # escaped, so the researcher sees what they wrote


def test_ordinary_markdown_still_renders():
    html = str(
        render_markdown(
            "## About\n\nPlease use *headphones*, **really**.\n\n- one\n- two\n\n"
            "[site](https://example.org/a?b=1) or [mail](mailto:lab@example.org) "
            "or [plain](http://example.org)"
        )
    )
    assert "<h2>About</h2>" in html
    assert "<em>headphones</em>" in html and "<strong>really</strong>" in html
    assert "<ul>" in html and "<li>one</li>" in html
    assert 'href="https://example.org/a?b=1"' in html
    assert 'href="mailto:lab@example.org"' in html and 'href="http://example.org"' in html
    assert 'rel="noopener noreferrer"' in html


def test_consent_page_shows_no_script_link(app, client, make_study, tmp_path):
    design = tmp_path / "links.yaml"
    text = "Read [this](javascript:alert(1)) and [that](https://example.org).\n\n"
    text += "<img src=x onerror=alert(1)>"
    design.write_text(
        json.dumps(
            small_design(
                slug="links",
                blocks=[
                    {"id": "consent", "type": "consent", "text": text},
                    {"id": "abx", "type": "abx", "conditions": ["sine_resynthesis"]},
                ],
            )
        )
    )
    _, entry = make_study(design)
    page = client.get(start(client, entry)).get_data(as_text=True)
    assert 'href="https://example.org"' in page
    assert "javascript:" not in page and "<img src=x" not in page


# responses.csv in a spreadsheet ---------------------------------------------------------------


def test_csv_cells_that_are_formulas_are_neutralised_and_numbers_kept():
    rows = [
        {"t": "=1+1", "n": -0.5},
        {"t": "+1", "n": -3},
        {"t": "-2", "n": 0},
        {"t": "@SUM(A1)", "n": None},
        {"t": "\tx", "n": 1.5},
        {"t": "\rx", "n": True},
        {"t": "plain = fine", "n": 2},
    ]
    read = list(csv.reader(io.StringIO(_csv_text(["t", "n"], rows))))[1:]
    assert [r[0] for r in read] == [
        "'=1+1",
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "plain = fine",
    ]
    assert [r[1] for r in read] == ["-0.5", "-3", "0", "", "1.5", "True", "2"]


def test_formula_prolific_ids_are_neutralised_in_the_export(app, client, demo_study):
    with app.app_context():
        entry = db.session.scalar(select(Study.entry_token))
    hostile = ['=HYPERLINK("http://x","y")', "+1+2", "-3+4", "@SUM(A1:A9)"]
    for pid in hostile:
        participant = app.test_client()
        run_to_end(participant, start(participant, entry, f"?PROLIFIC_PID={quote(pid)}"))
    researcher = app.test_client()
    assert login(researcher, "owner@example.org", "owner-password").status_code == 302
    response = researcher.get(f"/researcher/studies/{demo_study}/responses.csv")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert {r["external_id"] for r in rows} == {"'" + pid for pid in hostile}
    # no cell anywhere starts a formula; numbers are untouched (a spreadsheet or pandas reads
    # them as numbers)
    cells = [cell for row in rows for cell in row.values()]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
    for row in rows:
        float(row["rt_ms"])
        int(row["trial_index"])
    with app.app_context():  # the database keeps each id exactly as given
        stored = db.session.scalars(select(Participant.external_id)).all()
    assert sorted(stored) == sorted(hostile)
