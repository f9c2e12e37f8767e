"""export_contract is the one list of responses.csv's columns: the app's exporter, its trial types
and docs/export-format.md agree with it (analysis.load and analysis.simulate read it directly)."""

from __future__ import annotations

import re
from pathlib import Path

import export_contract
from study_app.export import export_columns
from study_app.trial_types import all_trial_types

DOC = Path(__file__).resolve().parents[2] / "docs" / "export-format.md"
CORE = [column.name for column in export_contract.COLUMNS if not column.optional]


def _documented() -> dict[str, str]:
    """{column: type cell} from every `| column | type | meaning |` table of the doc."""
    documented: dict[str, str] = {}
    in_table = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| column | type | meaning |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("|---"):
            continue
        names, kind = (cell.strip() for cell in line.split("|")[1:3])
        for name in re.findall(r"`([a-z_0-9]+)`", names):
            assert name not in documented, f"{name} documented twice"
            documented[name] = kind
    return documented


def test_the_exporter_writes_the_contracts_columns_in_its_order():
    assert export_columns() == export_contract.names()
    assert len(set(export_contract.names())) == len(export_contract.COLUMNS)


def test_every_trial_types_own_columns_are_in_the_contract_after_the_core_ones():
    """The documented order: the core columns, then each trial type's own, by type name."""
    expected = [c.name for c in export_contract.COLUMNS if not c.optional or not c.trial_types]
    registered = all_trial_types()
    for name in sorted(registered):
        expected += [c for c in registered[name].export_columns if c not in expected]
    assert export_contract.names() == expected
    exported = sorted(name for name, kind in registered.items() if kind.exported)
    assert exported == sorted(export_contract.EXPORTED_TRIAL_TYPES)
    for name in exported:
        for column in registered[name].export_columns:
            assert name in export_contract.BY_NAME[column].trial_types, (name, column)


def test_columns_name_only_known_trial_types_and_kinds():
    for column in export_contract.COLUMNS:
        assert column.kind in ("str", "int", "bool", "float", "timestamp"), column.name
        assert set(column.trial_types or ()) <= set(export_contract.EXPORTED_TRIAL_TYPES)
        assert column.required <= (not column.optional), column.name
        if column.kind == "int":
            assert column.low is not None, column.name
    # the columns every export has come first, the optional ones after `excluded`
    assert CORE[-1] == "excluded"
    assert export_contract.names()[: len(CORE)] == CORE


def test_the_docs_column_tables_match_the_contract():
    documented = _documented()
    assert sorted(documented) == sorted(export_contract.names())
    wrong = {
        name: (cell, export_contract.BY_NAME[name].doc_type())
        for name, cell in documented.items()
        if cell != export_contract.BY_NAME[name].doc_type()
    }
    assert not wrong
