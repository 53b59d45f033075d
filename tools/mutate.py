"""Mutation testing of one module with its own fast tests (cosmic-ray): ``./dev mutate``.

For people changing a module that decides money or security: every single-token mutant
(an operator, a comparison, a number, a constant, a decorator) the module's tests still
pass is a behaviour nobody checks. Not in CI: a module takes minutes.

Mutants are applied to a snapshot of the working tree under ``.mutation/<module>/``,
never to your files, so you can keep editing while it runs. Annotations of function
signatures and of module-level and local variables are skipped: under ``from __future__
import annotations`` nothing evaluates them, so their mutants are equivalent by
construction (class-body annotations are mutated: pydantic evaluates them). The kill
rate printed counts every other survivor; docs/mutation.md has the scores with the
equivalent mutants judged by hand set aside, and the list of them.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cosmic_ray.config import ConfigDict, serialize_config
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = ROOT / ".mutation"

MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "daskplatform/settings.py": ("tests/test_settings.py",),
    "daskplatform/gateway/quotas.py": ("tests/gateway/test_quotas.py",),
    "daskplatform/gateway/placement.py": ("tests/gateway/test_placement_queue.py",),
    "daskplatform/gateway/queue.py": ("tests/gateway/test_placement_queue.py",),
    "policies/quotas.py": ("tests/policies/test_quotas.py",),
    "policies/network.py": ("tests/policies/test_network.py",),
    "daskplatform/appsflyer/validate.py": ("tests/pipeline/test_schema.py",
                                           "tests/pipeline/test_validate.py"),
}
"""Each module and its fast tests (pure: no servers), the only tests run per mutant."""

TIMEOUT_FACTOR = 4
MIN_TIMEOUT_S = 15.0
"""A mutant's tests may run this many times as long as the unmutated run (at least the
floor): a mutant that loops forever counts as killed when the time is up."""

SKIPPED_ANNOTATION = "annotation: never evaluated"


@dataclass(frozen=True)
class Tally:
    total: int
    annotations: int
    killed: int
    survived: list[tuple[int, str, str]]
    """(line, operator, the mutated line) of each surviving mutant."""
    incompetent: int

    @property
    def score(self) -> float:
        tested = self.killed + len(self.survived)
        return 100.0 * self.killed / tested if tested else 100.0


def resolve(name: str) -> str:
    """A module given as a path or a dotted name, e.g. policies.network."""
    path = name if name.endswith(".py") else name.replace(".", "/") + ".py"
    if path not in MODULE_TESTS:
        raise SystemExit(f"mutate: no fast tests known for {name}; one of: "
                         + ", ".join(MODULE_TESTS) + " (tools/mutate.py, MODULE_TESTS)")
    return path


def snapshot(session: Path) -> Path:
    """Copy the working tree's files (tracked and new, not ignored) under the session."""
    tree = session / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            (tree / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / relative)
    return tree


def test_command(tests: tuple[str, ...]) -> list[str]:
    """Stop at the first failure; only the plugin these tests use and none of the shared
    fixtures (servers): scanning every installed package for pytest plugins and importing
    the fixtures' modules would double or treble each run."""
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "-p", "pytest_asyncio.plugin", "--noconftest", *tests]


def environment(tree: Path) -> dict[str, str]:
    """The snapshot's packages, never the editable install's (the working tree)."""
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def baseline_seconds(tree: Path, tests: tuple[str, ...]) -> float:
    """The unmutated tests must pass, or every mutant would look killed."""
    start = time.monotonic()
    run = subprocess.run(test_command(tests), cwd=tree, env=environment(tree),
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"mutate: the tests fail without any mutant:\n{run.stdout[-3000:]}")
    return time.monotonic() - start


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of the annotations nothing evaluates under postponed
    annotations: function signatures', module-level and local variables'."""
    tree = ast.parse(source)
    annotations = [n.annotation for n in tree.body if isinstance(n, ast.AnnAssign)]
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation:
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations += [node.returns] if node.returns else []
            annotations += [n.annotation for n in ast.walk(node) if isinstance(n, ast.AnnAssign)]
    return [((a.lineno, a.col_offset), (a.end_lineno or a.lineno, a.end_col_offset or 0))
            for a in annotations]


def in_annotation(module: Path) -> Callable[[tuple[int, int]], bool]:
    """Whether a mutant's start lies in a never-evaluated annotation of ``module``."""
    source = module.read_text(encoding="utf-8")
    if "from __future__ import annotations" not in source:
        return lambda position: False
    spans = annotation_spans(source)
    return lambda position: any(start <= tuple(position) < end for start, end in spans)


def skip_annotations(db: WorkDB, module: Path) -> None:
    """Mark mutants inside never-evaluated annotations as skipped (equivalent)."""
    inside = in_annotation(module)
    for item in list(db.pending_work_items):
        (mutation,) = item.mutations
        if inside(mutation.start_pos):
            db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                  output=SKIPPED_ANNOTATION))


def mutated_line(diff: str) -> str:
    added = [line[1:].strip() for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return added[0] if added else "(line removed)"


def tally(db: WorkDB, inside: Callable[[tuple[int, int]], bool]) -> Tally:
    """Counts of the session's results; mutants in annotations count as skipped even
    where an older rule ran them."""
    killed = incompetent = annotations = 0
    survived: list[tuple[int, str, str]] = []
    for item, result in db.completed_work_items:
        (mutation,) = item.mutations
        if result.worker_outcome == WorkerOutcome.SKIPPED or inside(mutation.start_pos):
            annotations += 1
        elif result.test_outcome == TestOutcome.SURVIVED:
            survived.append((mutation.start_pos[0], mutation.operator_name.removeprefix("core/"),
                             mutated_line(result.diff or "")))
        elif result.test_outcome == TestOutcome.KILLED:
            killed += 1
        else:
            incompetent += 1
    return Tally(db.num_work_items, annotations, killed, sorted(survived), incompetent)


def run_session(module: str, session: Path) -> None:
    tests = MODULE_TESTS[module]
    session.mkdir(parents=True, exist_ok=True)
    tree = snapshot(session)
    timeout = max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * baseline_seconds(tree, tests))
    config = ConfigDict({
        "module-path": str(tree / module), "timeout": timeout, "excluded-modules": [],
        "test-command": " ".join(test_command(tests)),
        "distributor": ConfigDict({"name": "local"}),
    })
    config_file, db_file = session / "config.toml", session / "session.sqlite"
    config_file.write_text(serialize_config(config), encoding="utf-8")
    db_file.unlink(missing_ok=True)
    cosmic_ray = [str(Path(sys.executable).with_name("cosmic-ray")), "--verbosity", "ERROR"]
    subprocess.run([*cosmic_ray, "init", str(config_file), str(db_file)], check=True)
    with use_db(str(db_file), WorkDB.Mode.open) as db:
        skip_annotations(db, tree / module)
        total, pending = db.num_work_items, len(list(db.pending_work_items))
    print(f"mutate: {module}: {total} mutants, {pending} to test with {' '.join(tests)} "
          f"(timeout {timeout:.0f} s each)", flush=True)
    worker = subprocess.Popen([*cosmic_ray, "exec", str(config_file), str(db_file)],
                              cwd=tree, env=environment(tree))
    for done in _progress(worker, db_file):
        print(f"mutate: {done} of {total} done", flush=True)
    if worker.returncode != 0:
        raise SystemExit(f"mutate: cosmic-ray exec failed ({worker.returncode})")


def _progress(worker: subprocess.Popen, db_file: Path) -> Iterator[int]:
    while True:
        try:
            worker.wait(timeout=60)
            return
        except subprocess.TimeoutExpired:
            with use_db(str(db_file), WorkDB.Mode.open) as db:
                yield db.num_results


def report(module: str, session: Path) -> Tally:
    with use_db(str(session / "session.sqlite"), WorkDB.Mode.open) as db:
        counts = tally(db, in_annotation(session / "tree" / module))
    print(f"{module}: {counts.total} mutants, {counts.annotations} skipped (annotations), "
          f"{counts.killed} killed, {len(counts.survived)} survived, "
          f"{counts.incompetent} incompetent: kill rate {counts.score:.1f} % "
          "(survivors judged equivalent in docs/mutation.md included)")
    for line, operator, text in counts.survived:
        print(f"  {module}:{line}  {operator}  {text}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev mutate", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help="a module path or dotted name; none: every module known")
    parser.add_argument("--report", action="store_true",
                        help="print the last session's results again, without running")
    args = parser.parse_args(argv)
    modules = [resolve(m) for m in args.modules] or list(MODULE_TESTS)
    summary = []
    for module in modules:
        session = SESSIONS / module.removesuffix(".py").replace("/", ".")
        if not args.report:
            run_session(module, session)
        summary.append((module, report(module, session)))
    if len(summary) > 1:
        print("\nmodule                                 mutants  killed  survived  score")
        for module, counts in summary:
            print(f"{module:38} {counts.total - counts.annotations:7} {counts.killed:7} "
                  f"{len(counts.survived):9} {counts.score:6.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
