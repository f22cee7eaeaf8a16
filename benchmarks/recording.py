"""Results files: what a benchmark printed, after the command and the commit it was taken at.

Every benchmark takes ``--output FILE``. Its standard output is printed as usual and, once the
run has succeeded, also written to FILE after a header of ``#`` lines (benchmarks/results/README):

    # .venv/bin/python benchmarks/etl_throughput.py --events 1000000 --output ...
    # commit 1a2b3c4, 2026-12-02 10:00 UTC, 2 CPUs

A figure is only worth keeping if it can be taken again on the same code and compared; the
commit says which code, and whether the working tree differed from it (then the files that did,
as `git status --porcelain` lists them, since the commit alone would not say what ran). A run
that fails writes nothing, so that no results file holds half a table.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="also write what is printed to FILE, after the command and the git commit",
    )


def results_header() -> str:
    """The ``#`` lines a results file begins with: the command, then the commit and the machine."""
    command = shlex.join([_shown(sys.executable), _shown(sys.argv[0]), *sys.argv[1:]])
    commit = _git("rev-parse", "--short", "HEAD").strip()
    changed = _git("status", "--porcelain").splitlines()
    taken = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs"
    lines = [f"# {command}", f"# commit {commit}, {taken}"]
    if changed:
        lines.append(
            "# uncommitted changes at the time: " + ", ".join(line[3:] for line in changed)
        )
    return "\n".join(lines) + "\n"


@contextmanager
def recorded(path: Path | None) -> Iterator[None]:
    """Everything printed inside the block also goes to ``path`` (if any) after the header, which
    is taken first: the commit the run started at."""
    if path is None:
        yield
        return
    header, copy, shown = results_header(), io.StringIO(), sys.stdout
    sys.stdout = _Tee(shown, copy)
    try:
        yield
    finally:
        sys.stdout = shown
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + copy.getvalue())


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _shown(path: str) -> str:
    """``path`` relative to the repository when it lies inside (.venv/bin/python, as typed)."""
    absolute = Path(path).absolute()
    return str(absolute.relative_to(REPOSITORY)) if absolute.is_relative_to(REPOSITORY) else path


def _git(*arguments: str) -> str:
    """Git's output, unstripped: a porcelain line's status columns may begin with a space."""
    return subprocess.run(
        ["git", *arguments],  # noqa: S607 (git from PATH, as the developer's shell finds it)
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
