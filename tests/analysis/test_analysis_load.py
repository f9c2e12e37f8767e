"""Reading and validating the export; exclusions."""

import json

import pandas as pd
import pytest

from analysis.load import (
    ExclusionConfig,
    ExportError,
    abx_trials,
    apply_exclusions,
    read_export,
    read_study,
)


def write(frame: pd.DataFrame, tmp_path, study_path):
    path = tmp_path / "responses.csv"
    frame.to_csv(path, index=False)
    return read_export(path, study_path)


@pytest.fixture
def raw(simulated_export_paths) -> pd.DataFrame:
    return pd.read_csv(simulated_export_paths[0], dtype=str, keep_default_na=False)


def test_reads_typed_tidy_columns(simulated_export):
    responses = simulated_export.responses
    assert responses["valence"].dtype == "Int64"
    assert responses["is_catch"].dtype == "boolean"
    assert str(responses["answered_at"].dt.tz) == "UTC"
    assert simulated_export.manifest["schema_version"] == "1.0"
    assert {b["id"] for b in simulated_export.design["blocks"]} >= {"realism", "emotion"}


def test_missing_required_columns_are_named(raw, tmp_path, simulated_export_paths):
    with pytest.raises(ExportError, match=r"missing required column\(s\): source, rt_ms"):
        write(raw.drop(columns=["source", "rt_ms"]), tmp_path, simulated_export_paths[1])


def test_bad_values_are_reported_with_rows(raw, tmp_path, simulated_export_paths):
    rating = raw.index[raw["trial_type"] == "emotion_rating"][0]
    raw.loc[rating, "valence"] = "12"
    raw.loc[0, "flag_too_fast"] = "yes"
    raw.loc[rating, "gems"] = "joy"
    with pytest.raises(ExportError) as caught:
        write(raw, tmp_path, simulated_export_paths[1])
    message = str(caught.value)
    assert f"'valence' must be an integer 1..9 (rows {rating + 2}: '12')" in message
    assert "'flag_too_fast' must be 0 or 1 (rows 2: 'yes')" in message
    assert "unknown GEMS word(s): joy" in message


def test_extra_columns_and_column_order_are_tolerated(raw, tmp_path, simulated_export_paths):
    raw["mushra_score"] = ""  # a future trial type's column, appended at the end
    shuffled = raw[list(reversed(raw.columns))]
    export = write(shuffled, tmp_path, simulated_export_paths[1])
    assert "mushra_score" in export.responses.columns
    assert len(abx_trials(export.responses)) > 0


def test_study_json_format_is_checked(tmp_path):
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"format": "other/9", "study": {}}))
    with pytest.raises(ExportError) as caught:
        read_study(path)
    assert "format must be 'sightsound-export/1'" in str(caught.value)
    assert "missing object 'design'" in str(caught.value)


def test_participant_flags_drop_people_and_row_flags_drop_rows():
    frame = pd.DataFrame({
        "participant": ["P1", "P1", "P2", "P2", "P3"],
        "flag_failed_screening": [0, 0, 0, 0, 0],
        # The export sets it on all rows; one row is enough for us to drop the person.
        "flag_failed_catch": [0, 1, 0, 0, 0],
        "flag_too_fast": [0, 0, 1, 0, 0],
    })
    result = apply_exclusions(frame)
    assert list(result.kept["participant"]) == ["P2", "P3"]
    table = result.table.set_index("rule")
    assert table.loc["flag_failed_catch", ["level", "participants", "rows"]].tolist() == [
        "participant", 1, 2]
    assert table.loc["flag_too_fast", ["level", "participants", "rows"]].tolist() == ["row", 1, 1]
    assert table.loc["any", "rows"] == 3


def test_exclusions_are_configurable():
    frame = pd.DataFrame({"participant": ["P1", "P2"], "flag_failed_screening": [1, 0],
                          "flag_failed_catch": [0, 0], "flag_too_fast": [0, 1]})
    only_screening = ExclusionConfig(failed_catch=False, too_fast=False)
    assert list(apply_exclusions(frame, only_screening).kept["participant"]) == ["P2"]
    assert len(apply_exclusions(frame, ExclusionConfig.none()).kept) == 2
