"""Every benchmark runs: each script in benchmarks/, at a size that takes seconds.

The benchmarks are run by hand, at sizes that take minutes to hours, so nothing else would notice
one that no longer starts (issue 15: `make bench` failed on its first ETL run). Each runs here as
a subprocess, exactly as from the command line, starting its own PostgreSQL and moto server, and
must exit 0 and print its table; the figures at this size mean nothing and are not asserted. Each
also writes its results file (--output), which must begin with the command and the commit.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.ansible import REPO_ROOT

pytestmark = pytest.mark.slow

BENCHMARKS = REPO_ROOT / "benchmarks"
# Per script: the arguments of a tiny run, and a pattern its table's header line matches.
SMOKE_RUNS = {
    "etl_throughput.py": (
        ["--events", "2000", "--insert-sample", "200", "--hourly-events", "2000"],
        r"path +events +seconds +events/s +ETL is",
    ),
    "refresh_scaling.py": (
        ["--sizes", "1000", "--events-per-day", "1000", "--batch", "20", "--repeat", "1"],
        r"events in table +in its last day +same day +new day",
    ),
    "dashboard_queries.py": (
        ["--events", "1000", "--days", "1", "--repeat", "1", "--raw-repeat", "1"],
        r"panel +range +filter +p50 +p95 +raw p50 +raw p95 +speedup +targets",
    ),
    "shop_through_etl.py": (
        ["--events", "1000", "--days", "1"],
        r"events +days +seconds +events/s +phases summed \(s\)",
    ),
}


def test_every_benchmark_script_has_a_smoke_run() -> None:
    scripts = {
        path.name
        for path in BENCHMARKS.glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    }
    assert scripts == set(SMOKE_RUNS)


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    arguments, header = SMOKE_RUNS[script]
    output = tmp_path / "results.txt"
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments, "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert re.search(rf"^ *{header} *$", run.stdout, re.MULTILINE), run.stdout

    command, commit, *_ = output.read_text().splitlines()
    assert command.startswith("# ")
    assert f"benchmarks/{script} {arguments[0]}" in command
    assert re.match(r"# commit [0-9a-f]{7,}, ", commit), commit
    assert output.read_text().endswith(run.stdout)
