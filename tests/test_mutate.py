"""./dev mutate's own rules: which mutants are skipped as annotations, how modules are
named, that every module's tests exist (the runs themselves take minutes: by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.mutate import MODULE_TESTS, ROOT, in_annotation, mutated_line, resolve

SOURCE = '''from __future__ import annotations

LIMIT: int | None = 3


class Model:
    field: int | None = None


def f(a: int | None, *rest: str | bytes) -> float | None:
    local: dict[str, int] | None = None
    return a | 1
'''


def test_only_annotations_nothing_evaluates_are_skipped(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(SOURCE)
    inside = in_annotation(module)
    assert inside((3, 11))  # module-level variable: int | None
    assert not inside((7, 15))  # class body: pydantic would evaluate it
    assert inside((10, 13)) and inside((10, 34)) and inside((10, 49))  # signature
    assert inside((11, 23))  # local variable
    assert not inside((12, 13))  # the expression a | 1 runs
    module.write_text(SOURCE.replace("from __future__ import annotations\n", ""))
    assert not in_annotation(module)((10, 13))


def test_modules_are_named_by_path_or_dotted_name() -> None:
    assert resolve("policies.network") == resolve("policies/network.py") == "policies/network.py"
    with pytest.raises(SystemExit, match="no fast tests known for daskplatform.cli"):
        resolve("daskplatform.cli")


def test_every_module_and_its_tests_exist() -> None:
    for module, tests in MODULE_TESTS.items():
        assert (ROOT / module).is_file(), module
        assert tests and all((ROOT / test).is_file() for test in tests), module


def test_a_survivor_is_shown_by_its_mutated_line() -> None:
    diff = "--- a\n+++ b\n@@ -1 +1 @@\n-    if a >= b:\n+    if a > b:\n"
    assert mutated_line(diff) == "if a > b:"
    assert mutated_line("--- a\n+++ b\n-@classmethod\n") == "(line removed)"
