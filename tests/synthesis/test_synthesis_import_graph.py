"""The synthesis package's import graph has no cycle, counting imports inside functions too.

A cycle hidden by a lazy import (an `import` inside a function) still ties its modules into one
knot: none of them can be read, tested or replaced without the others. The graph is read from
the source with `ast`, so every import statement counts wherever it stands (module level,
function body, `if TYPE_CHECKING:`). Imports by string (`importlib.import_module`, which the
conditions package uses to load its plugins) are not seen.
"""

from __future__ import annotations

import pathlib

from import_cycles import cycles, import_graph

import synthesis

PACKAGE = pathlib.Path(synthesis.__file__).parent


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from . import c\n")
    (package / "sub" / "c.py").write_text("def late():\n    from pkg.a import thing\n")
    (package / "d.py").write_text("import pkg.a\n")  # imports into the cycle, not part of it
    graph = import_graph(package)
    assert graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]


def test_no_import_cycle_among_the_synthesis_modules():
    graph = import_graph(PACKAGE)
    assert "synthesis.pipeline" in graph and "synthesis.config" in graph  # it read the package
    assert cycles(graph) == []
