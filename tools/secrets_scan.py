"""The secrets gate of `make security`: detect-secrets over the whole tree, against the baseline.

Every file git would commit (tracked, or untracked and not ignored) is scanned with the plugins
and filters recorded in .secrets.baseline. The gate fails when

- a finding is not in the baseline: a new secret, or a new false positive to audit;
- a baseline entry is not audited as a false positive (``"is_secret": false``): a real secret is
  taken out of the tree (tests generate theirs), never baselined.

Findings match baseline entries by file, type and hash, not by line, and checking never rewrites
the baseline (detect-secrets-hook rewrites it, and fails, whenever a line number moves).

To accept a false positive: rescan into the baseline (labels already given are kept), then
label the new entries (answer "n", not a secret):

    .venv-security/bin/python tools/secrets_scan.py --update-baseline
    .venv-security/bin/detect-secrets audit .secrets.baseline

Runs with the security virtualenv's Python (tools/bootstrap.sh builds .venv-security).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from detect_secrets.core import baseline
from detect_secrets.core.secrets_collection import SecretsCollection

REPOSITORY = Path(__file__).resolve().parents[1]
BASELINE = ".secrets.baseline"


def tree_files() -> list[str]:
    """The files git would commit, relative to the repository (symlinked folders are scanned
    where they really are)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(name for name in listed.split("\0") if name and (REPOSITORY / name).is_file())


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="rescan into the baseline, keeping the labels already given, instead of checking",
    )
    options = parser.parse_args(arguments)
    os.chdir(REPOSITORY)  # baseline entries name files relative to the repository
    # Loading the baseline also selects its plugins and filters for the scan below.
    audited = baseline.load(baseline.load_from_file(BASELINE), BASELINE)
    files = tree_files()
    found = SecretsCollection()
    found.scan_files(*files)

    if options.update_baseline:
        found.merge(audited)
        baseline.save_to_file(found, BASELINE)
        print(f"{BASELINE}: {sum(1 for _ in found)} entries; label new ones: detect-secrets audit")
        return 0

    new = sorted((name, secret.line_number, secret.type) for name, secret in found - audited)
    unaudited = sorted(
        (name, secret.line_number, secret.type)
        for name, secret in audited
        if secret.is_secret is not False
    )
    for name, line, kind in new:
        print(f"NEW       {name}:{line}: {kind}")
    for name, line, kind in unaudited:
        print(f"UNAUDITED {name}:{line}: {kind} (in {BASELINE} without is_secret: false)")
    known = sum(1 for _ in found) - len(new)
    print(
        f"detect-secrets: {len(files)} files; {known} findings known to {BASELINE}, {len(new)} new;"
        f" {len(unaudited)} baseline entries not audited as false positives"
    )
    if new or unaudited:
        print(
            "Take the secret out of the tree (tests generate theirs), or audit the false positive "
            "and update the baseline: see tools/secrets_scan.py."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
