"""Where the repository's shared artefacts (files/) are found, in the repo and in a Lambda zip."""

from __future__ import annotations

from pathlib import Path

# tools/build_lambdas.py copies the artefacts a function needs to clickstream/_files/ in its zip;
# in a checkout they live in the repository's files/ folder. One copy in git either way.
_PACKAGED_ROOT = Path(__file__).resolve().parent / "_files"
_REPOSITORY_ROOT = Path(__file__).resolve().parents[2] / "files"


def shared_file(relative_path: str) -> Path:
    """Return the path of ``files/<relative_path>``, packaged or in the checkout."""
    for root in (_PACKAGED_ROOT, _REPOSITORY_ROOT):
        candidate = root / relative_path
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"shared artefact files/{relative_path} is neither packaged in {_PACKAGED_ROOT} "
        f"nor present in the checkout at {_REPOSITORY_ROOT}"
    )
