"""The progress bar counts trials as a participant perceives them: consent and the pauses
between ACR ratings are pages, not trials, so they neither add to the total nor count as
answered. Screening pages (headphone check, P.808 qualification) are listening tasks and count.
"""

from __future__ import annotations

import re
from pathlib import Path

from flow import current, start, valid_answer
from sqlalchemy import select

from study_app.extensions import db
from study_app.models import Participant
from study_app.services import locate, progress_counts

DESIGN = Path(__file__).parents[1] / "data" / "a11y_all_types.yaml"
PROGRESS = re.compile(
    r'<progress max="(\d+)" value="(\d+)"[^>]*></progress>\s*'
    r'<span class="progress-text">(\d+) of (\d+) answered</span>'
)


def shown_progress(html: str) -> tuple[int, int]:
    """(answered, total) as the page shows them; the bar and the words must agree."""
    total, done, done_text, total_text = map(int, PROGRESS.search(html).groups())
    assert (done, total) == (done_text, total_text)
    return done, total


def test_progress_counts_trials_not_consent_or_pauses(app, client, make_study):
    _, entry = make_study(DESIGN)
    step = start(client, entry)
    token = step.split("/")[2]
    # headphone check, P.808 qualification, emotion, ABX, MUSHRA, similarity, fit rating,
    # fit preference, and two ACR ratings (a rated clip and a gold question); the ACR pause
    # between them and the consent page are not trials.
    trials = 10
    seen: list[tuple[str, int, int]] = []
    for _ in range(30):
        page = current(client, step)
        if page.trial_type is None:
            break
        kind = "pause" if 'id="rest"' in page.html else page.trial_type
        done, total = shown_progress(page.html)
        seen.append((kind, done, total))
        with app.app_context():
            position = locate(token, with_progress=True)
            # locate (trial pages) and progress_counts (finished and problem pages) agree
            assert (position.answered, position.total) == (done, total)
            assert progress_counts(position.participant) == (done, total)
        if kind == "consent":
            # a refused answer re-renders the page (status 400) with the same progress
            refused = client.post(page.action, data={})
            assert refused.status_code == 400
            assert shown_progress(refused.get_data(as_text=True)) == (0, trials)
        assert client.post(page.action, data=valid_answer(app, page)).status_code == 303
    else:
        raise AssertionError("the study did not end")

    assert {total for _, _, total in seen} == {trials}
    kinds = [kind for kind, _, _ in seen]
    done = [done for _, done, _ in seen]
    assert kinds[:2] == ["consent", "headphone_check"]
    assert done[:2] == [0, 0]  # agreeing to take part answered no trial
    pause = kinds.index("pause")
    assert kinds[pause - 1] == kinds[pause + 1] == "acr"
    # the pause shows the rating before it as answered, and answering it adds nothing
    assert done[pause] == done[pause - 1] + 1 == done[pause + 1]
    # after consent, every page adds exactly one, except the pause
    steps = range(1, len(done) - 1)
    assert [done[i + 1] - done[i] for i in steps] == [
        0 if kinds[i] == "pause" else 1 for i in steps
    ]
    assert shown_progress(page.html) == (trials, trials)  # the finished page: all answered
    with app.app_context():
        participant = db.session.scalar(select(Participant))
        assert progress_counts(participant) == (trials, trials)
