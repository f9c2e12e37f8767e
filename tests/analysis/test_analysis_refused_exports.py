"""Bad exports are refused (exit status 2, a message naming the file, lines and participants),
not analysed; legitimate ones (a study still running, withdrawals) pass. Issues 13 and 15.

Each bad export is a simulated one (conftest: 80 participants, 54 rows each) corrupted in one way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.load import ExclusionConfig, ExportError, apply_exclusions, read_export
from analysis.simulate import simulate_export

ROWS_EACH = 6 + 24 + 24  # headphone check, ABX, emotion ratings (conftest's simulation)


@pytest.fixture
def export(tmp_path, simulated_export_paths) -> tuple[Path, Path]:
    """A copy of the simulated export whose study.json has the counts the app would write
    (simulate.py writes 0 and 0, which the checks read as "not recorded")."""
    responses = tmp_path / "responses.csv"
    study = tmp_path / "study.json"
    shutil.copy(simulated_export_paths[0], responses)
    shutil.copy(simulated_export_paths[1], study)
    set_counts(study, started=80, completed=80)
    return responses, study


def set_counts(study: Path, started: int, completed: int) -> None:
    data = json.loads(study.read_text(encoding="utf-8"))
    data["study"].update(participants_started=started, participants_completed=completed)
    study.write_text(json.dumps(data), encoding="utf-8")


def raw(responses: Path) -> pd.DataFrame:
    return pd.read_csv(responses, dtype=str, keep_default_na=False)


def save(frame: pd.DataFrame, responses: Path) -> None:
    frame.to_csv(responses, index=False)


def refused(export: tuple[Path, Path], capsys) -> str:
    """Run `python -m analysis report` on the export: it must exit 2 and write no report."""
    responses, study = export
    out = responses.parent / "report"
    status = main(["report", "--responses", str(responses), "--study", str(study),
                   "--out", str(out)])
    message = capsys.readouterr().err
    assert status == 2, message
    assert not out.exists()
    assert str(responses) in message or str(study) in message  # names the file
    return message


def lines(frame: pd.DataFrame, mask: pd.Series) -> list[int]:
    """Line numbers in the file (header = line 1) of the rows in `mask`."""
    return [int(i) + 2 for i in frame.index[mask]]


# ------------------------------------------------------------------ legitimate exports pass
def test_the_intact_export_with_the_apps_counts_loads(export):
    assert read_export(*export).responses["participant"].nunique() == 80


def test_a_running_study_with_incomplete_participants_and_withdrawals_loads(export):
    responses, study = export
    frame = raw(responses)
    # P3 and P9 stopped half-way through the ABX block; P5 withdrew (deleted from both files).
    stopped = frame["participant"].isin(["P3", "P9"]) & (frame["block"] == "emotion")
    stopped |= frame["participant"].isin(["P3", "P9"]) & (frame["trial_in_block"].astype(int) > 11)
    save(frame[~stopped & (frame["participant"] != "P5")], responses)
    set_counts(study, started=79, completed=77)
    assert read_export(responses, study).responses["participant"].nunique() == 79


def test_simulated_exports_of_every_trial_type_load(tmp_path):
    responses, study = simulate_export(tmp_path, participants=12, abx_trials=6, rating_trials=8,
                                       sources=3, fit_preference_trials=4, acr_trials=5, seed=5)
    assert set(read_export(responses, study).responses["trial_type"]) == {
        "headphone_check", "abx", "emotion_rating", "fit_preference", "acr", "p808_qualification"}


# ------------------------------------------------------------------------- refused exports
def test_a_file_cut_at_a_line_end_is_refused(export, capsys):
    responses, _ = export
    text = responses.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = 1 + 47 * ROWS_EACH + 20  # header, 47 whole participants, 20 rows of the 48th
    responses.write_text("".join(text[:kept]), encoding="utf-8")
    message = refused(export, capsys)
    assert "study.json says 80 participants completed" in message
    assert "only 47 of the 48 participants here have all their rows" in message
    assert f"the file ends at line {kept}" in message
    assert "with participant P48, who has 20 of the 54 rows" in message


def test_a_study_json_whose_design_gives_fewer_rows_says_so_in_a_true_sentence(export, capsys):
    # Issue 21: every participant has more rows than the design gives; the refusal said
    # "rows are missing ... who has 96 of the 40 rows". A participant with more rows than the
    # design gives has not lost rows, and "N of the M rows" only reads for N <= M.
    _, study = export
    data = json.loads(study.read_text(encoding="utf-8"))
    block = next(b for b in data["design"]["blocks"] if b["type"] == "emotion_rating")
    block["trials_per_participant"] = 8
    study.write_text(json.dumps(data), encoding="utf-8")
    message = refused(export, capsys)
    assert "more rows in block 'emotion' than the design gives" in message
    assert "the file's last participant, P80, has 54 rows where the design gives 38" in message
    assert " of the 38 rows" not in message and "rows are missing" not in message


def test_a_latin1_responses_file_is_refused_naming_the_file_and_line(export, capsys):
    # Issue 21: a spreadsheet saved the export as Latin-1; the refusal was Python's bare
    # "'utf-8' codec can't decode byte 0xe9 in position 435", without file or line.
    responses, _ = export
    frame = raw(responses)
    frame.loc[frame["participant"] == "P2", "external_id"] = "Ren\u00e9e"
    text = frame.to_csv(index=False)
    responses.write_bytes(text.encode("latin-1"))
    line = lines(frame, frame["participant"] == "P2")[0]
    message = refused(export, capsys)
    assert str(responses) in message
    assert f"line {line}, byte" in message and "(0xe9) is not UTF-8" in message
    assert "the export must be UTF-8" in message
    assert "codec can't decode" not in message


def test_a_file_cut_inside_a_line_is_refused(export, capsys):
    responses, _ = export
    text = responses.read_text(encoding="utf-8")
    responses.write_text(text[: len(text) // 2], encoding="utf-8")
    assert "do not have the header's" in refused(export, capsys)


def test_a_header_without_rows_is_refused(export, capsys):
    responses, _ = export
    responses.write_text(responses.read_text().splitlines(keepends=True)[0], encoding="utf-8")
    message = refused(export, capsys)
    assert "a header but no rows" in message and "80 participants started" in message


def test_the_study_json_of_another_study_is_refused(export, tmp_path, capsys):
    responses, _ = export
    _, other = simulate_export(tmp_path / "other", participants=4, abx_trials=4, rating_trials=4,
                               sources=2, seed=1)
    data = json.loads(other.read_text())
    data["study"]["slug"] = data["design"]["slug"] = "another-study"
    other.write_text(json.dumps(data))
    message = refused((responses, other), capsys)
    assert "rows of study 'simulated', but study.json is study 'another-study'" in message
    assert "lines 2, 3, 4, 5, 6 and 4315 more" in message


def test_duplicated_rows_are_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    save(pd.concat([frame, frame.iloc[[100, 101]]], ignore_index=True), responses)
    message = refused(export, capsys)
    assert "duplicated rows" in message
    assert f"lines 102, 103, {len(frame) + 2}, {len(frame) + 3}" in message
    assert "participants P2" in message


def test_a_trial_answered_twice_is_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    again = frame.iloc[[60]].assign(answer="B", correct="0", correct_answer="A")
    save(pd.concat([frame, again], ignore_index=True), responses)
    message = refused(export, capsys)
    assert "duplicated rows" in message and f"lines 62, {len(frame) + 2}" in message


def test_more_rows_than_the_design_gives_are_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    extra = frame.iloc[[60]].assign(trial_index="999", trial_in_block="24")
    save(pd.concat([frame, extra], ignore_index=True), responses)
    message = refused(export, capsys)
    assert "more rows in block 'realism' than the design gives (24 per participant" in message
    assert "participants P2" in message


def test_more_participants_than_study_json_started_is_refused(export, capsys):
    set_counts(export[1], started=70, completed=70)
    assert "80 participants, but study.json says only 70 started" in refused(export, capsys)


def test_an_unknown_condition_is_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    bad = (frame["trial_type"] == "emotion_rating") & (frame["participant"] == "P7")
    frame.loc[bad, "condition"] = "keeps_emotoin"
    save(frame, responses)
    message = refused(export, capsys)
    assert "'condition' 'keeps_emotoin' is in neither the manifest nor the design" in message
    assert f"lines {lines(frame, bad)[0]}" in message and "participants P7" in message


def test_correct_contradicting_the_answer_is_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    row = frame.index[(frame["trial_type"] == "abx") & (frame["participant"] == "P4")][3]
    frame.loc[row, "correct"] = "0" if frame.loc[row, "correct"] == "1" else "1"
    save(frame, responses)
    message = refused(export, capsys)
    assert "'correct' contradicts 'answer' and 'correct_answer'" in message
    assert f"lines {row + 2}; participants P4" in message


def _fail_headphone_check(frame: pd.DataFrame, who: str) -> pd.Series:
    rows = (frame["participant"] == who) & (frame["trial_type"] == "headphone_check")
    frame.loc[rows, "answer"] = frame.loc[rows, "correct_answer"].map(
        lambda right: str(int(right) % 3 + 1))
    frame.loc[rows, "correct"] = "0"
    return frame["participant"] == who


def test_a_failed_listener_with_empty_flag_cells_is_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    mine = _fail_headphone_check(frame, "P11")
    frame.loc[mine, ["flag_failed_screening", "flag_failed_catch", "flag_too_fast"]] = ""
    save(frame, responses)
    message = refused(export, capsys)
    assert "'flag_failed_screening' is empty" in message and "participants P11" in message


def test_a_failed_headphone_check_without_the_flag_is_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    mine = _fail_headphone_check(frame, "P12")
    frame.loc[mine, "flag_failed_screening"] = "0"
    save(frame, responses)
    message = refused(export, capsys)
    assert "failed the headphone check or P.808 qualification but 'flag_failed_screening' is " \
           "not set" in message
    assert "participants P12" in message


def test_a_participant_flag_set_on_some_rows_only_is_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    frame.loc[frame.index[frame["participant"] == "P13"][:10], "flag_failed_catch"] = "1"
    save(frame, responses)
    message = refused(export, capsys)
    assert "'flag_failed_catch' differs between rows of the same participant" in message
    assert "participants P13" in message


def test_participant_ids_with_trailing_spaces_are_refused(export, capsys):
    responses, _ = export
    frame = raw(responses)
    padded = frame.index[frame["participant"] == "P20"][-5:]
    frame.loc[padded, "participant"] = "P20 "
    save(frame, responses)
    message = refused(export, capsys)
    assert "participant ids with leading or trailing spaces" in message
    assert "participants 'P20 '" in message


def test_bad_json_and_missing_files_exit_2(export, tmp_path, capsys):
    responses, study = export
    study.write_text("{ not json", encoding="utf-8")
    assert "not valid JSON" in refused(export, capsys)
    status = main(["report", "--responses", str(tmp_path / "nope.csv"), "--study", str(study),
                   "--out", str(tmp_path / "report")])
    assert status == 2 and "nope.csv" in capsys.readouterr().err


# ---------------------------------------------------------------- empty ratings: excluded
def test_empty_ratings_are_a_counted_exclusion_not_dropped_silently(export):
    responses, study = export
    frame = raw(responses)
    rated = frame.index[(frame["trial_type"] == "emotion_rating") & (frame["is_catch"] == "0")]
    frame.loc[rated[:2], "valence"] = ""
    frame.loc[rated[30], "fit"] = ""
    save(frame, responses)
    loaded = read_export(responses, study).responses
    result = apply_exclusions(loaded)
    summary = result.summary.set_index("rule")
    assert summary.loc["empty_rating", ["rows", "participants", "applied"]].tolist() == [
        3, 2, True]
    assert not set(rated[[0, 1, 30]]) & set(result.kept.index)
    kept = apply_exclusions(loaded, ExclusionConfig(empty_ratings=False)).kept
    assert set(rated[[0, 1, 30]]) <= set(kept.index)


def test_a_scale_the_block_does_not_ask_is_not_an_empty_rating(export):
    responses, study = export
    frame = raw(responses)
    frame.loc[frame["trial_type"] == "emotion_rating", "tempo"] = ""  # tempo not asked at all
    save(frame, responses)
    summary = apply_exclusions(read_export(responses, study).responses).summary
    assert summary.set_index("rule").loc["empty_rating", "rows"] == 0


def test_the_summary_counts_every_rule_and_the_rows_not_analysed(simulated_export):
    responses = simulated_export.responses
    summary = apply_exclusions(responses).summary.set_index("rule")
    assert list(summary.columns) == ["reason", "applied", "rows", "participants"]
    assert list(summary.index) == ["flag_failed_screening", "flag_failed_catch", "flag_too_fast",
                                   "not_listened", "empty_rating", "any", "not_analysed"]
    kept = apply_exclusions(responses).kept
    catch_or_screening = kept["is_catch"] | (kept["trial_type"] == "headphone_check")
    assert summary.loc["not_analysed", "rows"] == catch_or_screening.sum()
    assert summary.loc["any", "rows"] == len(responses) - len(kept)


# ------------------------------------------------------------- issue 13: "not listened"
def add_listening_columns(frame: pd.DataFrame, unheard: list[int], too_quick: list[int]):
    frame["server_rt_ms"] = "30000"
    frame["media_fetched"] = ""
    abx = frame["trial_type"] == "abx"
    frame.loc[abx, "media_fetched"] = "a:1.00;b:1.00;x:1.00"
    frame["flag_unheard"] = "0"
    frame["flag_too_quick"] = "0"
    frame.loc[unheard, "flag_unheard"] = "1"
    frame.loc[unheard, "media_fetched"] = "a:1.00;b:1.00;x:0.40"
    frame.loc[too_quick, "flag_too_quick"] = "1"
    frame.loc[too_quick, "server_rt_ms"] = "900"
    return frame


def _clean_rows(frame: pd.DataFrame, n: int) -> list[int]:
    """Non-catch ABX rows of listeners with no flag at all (so the new rule alone drops them)."""
    flags = ["flag_failed_screening", "flag_failed_catch", "flag_too_fast"]
    clean = (frame[flags] == "0").all(axis=1) & (frame["trial_type"] == "abx")
    clean &= frame["is_catch"] == "0"
    return list(frame.index[clean][:n])


def test_not_listened_rows_are_excluded_and_counted(export):
    responses, study = export
    frame = raw(responses)
    rows = _clean_rows(frame, 5)
    save(add_listening_columns(frame, unheard=rows[:3], too_quick=rows[2:]), responses)
    loaded = read_export(responses, study).responses
    assert str(loaded["server_rt_ms"].dtype) == "Int64"
    assert str(loaded["flag_unheard"].dtype) == "boolean"
    result = apply_exclusions(loaded)
    summary = result.summary.set_index("rule")
    people = frame.loc[rows, "participant"].nunique()
    assert summary.loc["not_listened", ["rows", "participants", "applied"]].tolist() == [
        5, people, True]
    assert result.table.set_index("rule").loc["not_listened", "rows"] == 5
    assert not set(rows) & set(result.kept.index)
    kept = apply_exclusions(loaded, ExclusionConfig(not_listened=False))
    assert set(rows) <= set(kept.kept.index)
    assert not kept.summary.set_index("rule").loc["not_listened", "applied"]


def test_exports_without_the_listening_columns_still_load(simulated_export):
    assert "flag_unheard" not in simulated_export.responses.columns
    summary = apply_exclusions(simulated_export.responses).summary.set_index("rule")
    assert summary.loc["not_listened", "rows"] == 0


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("flag_unheard", "2", "'flag_unheard' must be 0 or 1"),
        ("flag_too_quick", "yes", "'flag_too_quick' must be 0 or 1"),
        ("server_rt_ms", "-40", "'server_rt_ms' must be an integer >= 0"),
        ("server_rt_ms", "1.5", "'server_rt_ms' must be an integer >= 0"),
        ("media_fetched", "a:1.00;x=0.4", "'media_fetched' must be slot:fraction entries"),
        ("media_fetched", "a:1.20", "'media_fetched' must be slot:fraction entries"),
    ],
)
def test_bad_listening_values_are_refused(export, capsys, column, value, expected):
    responses, _ = export
    frame = add_listening_columns(raw(responses), unheard=[], too_quick=[])
    frame.loc[70, column] = value
    save(frame, responses)
    message = refused(export, capsys)
    assert expected in message and "rows 72" in message


def test_keep_unheard_switches_the_rule_off(export, monkeypatch):
    import analysis.report

    seen = {}

    def fake_report(responses, study, out, config, objective=None):
        seen["config"] = config
        return {"tables": {}, "seconds": 0}

    monkeypatch.setattr(analysis.report, "report_from_files", fake_report)
    args = ["report", "--responses", str(export[0]), "--study", str(export[1]), "--out", "x"]
    assert main(args) == 0
    assert seen["config"].exclusions.not_listened is True
    assert main([*args, "--keep-unheard"]) == 0
    assert seen["config"].exclusions == ExclusionConfig(not_listened=False)


def test_export_error_lists_the_files(export):
    responses, study = export
    frame = raw(responses)
    frame.loc[5, "participant"] = "P1 "
    save(frame, responses)
    with pytest.raises(ExportError) as caught:
        read_export(responses, study)
    assert caught.value.files == (f"responses: {responses}", f"study: {study}")
    assert caught.value.problems[0].startswith(f"{responses}: participant ids")
