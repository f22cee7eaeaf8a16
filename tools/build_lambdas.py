#!/usr/bin/env python3
"""Build the deployment zips of Lambda Ingest and Lambda ETL from lambda_src, reproducibly.

Each zip holds the function's ``handler.py`` at its root, the shared ``clickstream`` package
(its .py files only), the shared artefacts it reads under ``clickstream/_files/`` (where
clickstream/resources.py looks first), and the contents of the wheels of its dependencies at the
versions pinned in requirements.txt, for the Lambda architecture and Python runtime. boto3 comes
with the Lambda runtime and is not bundled.

The same sources and wheels always give the same bytes: entries sorted, a fixed timestamp and
mode, a fixed compression level. Wheels are downloaded once into .cache/wheels/; later builds
do not touch the network.

    python tools/build_lambdas.py [--architecture x86_64|arm64] [--python-version 3.12]
                                  [--output-dir build/lambda] [--wheel-cache .cache/wheels]
                                  [--function ingest|etl ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
LAMBDA_SOURCE = REPOSITORY_ROOT / "lambda_src"
SHARED_PACKAGE = LAMBDA_SOURCE / "clickstream"
SHARED_FILES_ROOT = REPOSITORY_ROOT / "files"
REQUIREMENTS = REPOSITORY_ROOT / "requirements.txt"
WHEEL_CACHE = REPOSITORY_ROOT / ".cache" / "wheels"
DEFAULT_OUTPUT_DIR = REPOSITORY_ROOT / "build" / "lambda"

# Where clickstream/resources.py looks for the artefacts of files/ inside a zip.
PACKAGED_FILES_PREFIX = "clickstream/_files/"

# Lambda's architecture names → the machine names in wheel platform tags.
WHEEL_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
DEFAULT_ARCHITECTURE = "x86_64"
DEFAULT_PYTHON_VERSION = "3.12"
# A manylinux_2_N wheel runs where glibc is 2.N or newer. The python3.12 and later runtimes run on
# Amazon Linux 2023 (glibc 2.34), the older ones on Amazon Linux 2 (glibc 2.26); manylinux2014
# (glibc 2.17) is the oldest tag we take. Some wheels exist only for a newer glibc: psycopg2-binary
# 2.9.13 for aarch64 is manylinux_2_28 only.
OLDEST_MANYLINUX_GLIBC_MINOR = 17
FIRST_AMAZON_LINUX_2023_PYTHON = (3, 12)
AMAZON_LINUX_GLIBC_MINOR = {"2023": 34, "2": 26}

# Reproducibility: the earliest time a zip can store, one mode, one compression level.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o100644  # a regular file, rw-r--r--; Lambda reads code, dlopen needs no x bit
ZIP_CREATE_SYSTEM_UNIX = 3  # so that the mode in external_attr is honoured when unpacked
ZIP_COMPRESS_LEVEL = 9


class BuildError(Exception):
    """A build that cannot go on, with a message for the person running it."""


@dataclass(frozen=True)
class LambdaFunction:
    """What goes into one function's zip."""

    name: str
    handler_source: Path
    shared_files: tuple[str, ...]  # paths under files/
    dependencies: tuple[str, ...]  # distribution names, pinned in requirements.txt


FUNCTIONS = {
    "ingest": LambdaFunction(
        name="ingest",
        handler_source=LAMBDA_SOURCE / "ingest" / "handler.py",
        shared_files=("contract/clickstream-event.schema.json",),
        dependencies=("fastjsonschema", "orjson"),
    ),
    "etl": LambdaFunction(
        name="etl",
        handler_source=LAMBDA_SOURCE / "etl" / "handler.py",
        shared_files=("contract/clickstream-event.schema.json",),
        dependencies=("fastjsonschema", "orjson", "psycopg2-binary"),
    ),
}


@dataclass(frozen=True)
class Target:
    """The Lambda runtime a zip is built for."""

    architecture: str = DEFAULT_ARCHITECTURE
    python_version: str = DEFAULT_PYTHON_VERSION

    @property
    def glibc_minor(self) -> int:
        version = tuple(int(part) for part in self.python_version.split("."))
        amazon_linux = "2023" if version >= FIRST_AMAZON_LINUX_2023_PYTHON else "2"
        return AMAZON_LINUX_GLIBC_MINOR[amazon_linux]

    @property
    def wheel_platforms(self) -> list[str]:
        """The platform tags of wheels that run on the target, the most specific first."""
        machine = WHEEL_MACHINES[self.architecture]
        minors = range(self.glibc_minor, OLDEST_MANYLINUX_GLIBC_MINOR - 1, -1)
        return [f"manylinux_2_{minor}_{machine}" for minor in minors] + [
            f"manylinux2014_{machine}"  # the legacy alias that some wheels alone carry
        ]

    def cache_dir(self, wheel_cache: Path) -> Path:
        # One folder per target: any wheel in it was chosen by pip for exactly this target.
        return wheel_cache / f"cp{self.python_version.replace('.', '')}-{self.wheel_platforms[0]}"


@dataclass(frozen=True)
class BuiltZip:
    path: Path
    size: int
    sha256: str


def normalized_name(distribution: str) -> str:
    """PEP 503 normalisation: psycopg2_binary, Psycopg2-Binary and psycopg2-binary are one."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def pinned_versions(requirements_text: str) -> dict[str, str]:
    """``name==version`` pins of a requirements file, by normalised name."""
    pins = {}
    for line in requirements_text.splitlines():
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[normalized_name(match.group(1))] = match.group(2)
    return pins


def pinned_version(distribution: str, pins: dict[str, str]) -> str:
    try:
        return pins[normalized_name(distribution)]
    except KeyError:
        raise BuildError(
            f"{distribution} is not pinned (name==version) in {REQUIREMENTS.name}; "
            "add it to requirements.in and run 'make lock'"
        ) from None


def source_files(function: LambdaFunction) -> list[tuple[str, Path]]:
    """(name in the zip, file in the checkout) of the function's own code and artefacts."""
    if not function.handler_source.is_file():
        raise BuildError(f"the {function.name} handler {function.handler_source} does not exist")
    entries = [("handler.py", function.handler_source)]
    for module in sorted(SHARED_PACKAGE.rglob("*.py")):
        relative = module.relative_to(SHARED_PACKAGE)
        if "__pycache__" not in relative.parts:
            entries.append((f"clickstream/{relative.as_posix()}", module))
    for shared in function.shared_files:
        artefact = SHARED_FILES_ROOT / shared
        if not artefact.is_file():
            raise BuildError(f"the shared artefact files/{shared} does not exist")
        entries.append((PACKAGED_FILES_PREFIX + shared, artefact))
    return entries


def _cached_wheel(cache_dir: Path, distribution: str, version: str) -> Path | None:
    for wheel in sorted(cache_dir.glob("*.whl")):
        name, wheel_version = wheel.name.split("-")[:2]
        if normalized_name(name) == normalized_name(distribution) and wheel_version == version:
            return wheel
    return None


def fetch_wheel(distribution: str, version: str, target: Target, wheel_cache: Path) -> Path:
    """The wheel of ``distribution==version`` for ``target``, from the cache or from PyPI."""
    cache_dir = target.cache_dir(wheel_cache)
    cached = _cached_wheel(cache_dir, distribution, version)
    if cached:
        return cached
    platforms = [option for tag in target.wheel_platforms for option in ("--platform", tag)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--no-deps", *platforms,
        "--python-version", target.python_version,
        "--implementation", "cp",
        "--dest", str(cache_dir),
        f"{distribution}=={version}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"pip could not download a wheel of {distribution}=={version} for Python "
            f"{target.python_version} on {target.architecture} (glibc 2.{target.glibc_minor}):\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    downloaded = _cached_wheel(cache_dir, distribution, version)
    if not downloaded:
        raise BuildError(
            f"pip reported success, yet no wheel of {distribution}=={version} is in {cache_dir}"
        )
    return downloaded


def wheel_contents(wheel: Path) -> dict[str, bytes]:
    """The files a wheel installs into site-packages, by their path there."""
    contents = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if member.is_dir():
                    continue
                name = member.filename
                # <dist>.data/purelib|platlib/ go to site-packages; scripts, headers are no use.
                data_dir = re.match(r"^[^/]+\.data/([^/]+)/", name)
                if data_dir:
                    if data_dir.group(1) not in ("purelib", "platlib"):
                        continue
                    name = name[data_dir.end() :]
                contents[name] = archive.read(member)
    except zipfile.BadZipFile as error:
        raise BuildError(
            f"{wheel} is not a valid wheel ({error}); delete it, build again"
        ) from None
    return contents


def zip_entries(
    function: LambdaFunction, target: Target, pins: dict[str, str], wheel_cache: Path
) -> dict[str, bytes]:
    """Every file of the function's zip, by name in the zip."""
    entries: dict[str, bytes] = {}

    def add(name: str, data: bytes, origin: str) -> None:
        if name in entries:
            raise BuildError(f"{function.name}.zip: {name} from {origin} is already in the zip")
        entries[name] = data

    for name, path in source_files(function):
        add(name, path.read_bytes(), str(path))
    for distribution in function.dependencies:
        wheel = fetch_wheel(distribution, pinned_version(distribution, pins), target, wheel_cache)
        for name, data in wheel_contents(wheel).items():
            add(name, data, wheel.name)
    return entries


def write_reproducible_zip(entries: dict[str, bytes], path: Path) -> None:
    """Write ``entries`` so that the same entries always give the same bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            info.create_system = ZIP_CREATE_SYSTEM_UNIX
            info.external_attr = ZIP_FILE_MODE << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name], compresslevel=ZIP_COMPRESS_LEVEL)


def build(
    function_names: Iterable[str],
    target: Target,
    output_dir: Path,
    wheel_cache: Path = WHEEL_CACHE,
) -> list[BuiltZip]:
    """Build ``<name>.zip`` of each function into ``output_dir``; all of them, or none."""
    pins = pinned_versions(REQUIREMENTS.read_text(encoding="utf-8"))
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=output_dir))
    try:
        staged = []
        for name in function_names:
            staged_zip = staging / f"{name}.zip"
            entries = zip_entries(FUNCTIONS[name], target, pins, wheel_cache)
            write_reproducible_zip(entries, staged_zip)
            staged.append(staged_zip)
        built = []
        for staged_zip in staged:
            final = output_dir / staged_zip.name
            os.replace(staged_zip, final)
            data = final.read_bytes()
            built.append(BuiltZip(final, len(data), hashlib.sha256(data).hexdigest()))
        return built
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _python_version(text: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", text):
        raise argparse.ArgumentTypeError(
            f"expected a Lambda Python runtime such as 3.12, not {text!r}"
        )
    return text


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--architecture", choices=sorted(WHEEL_MACHINES), default=DEFAULT_ARCHITECTURE
    )
    parser.add_argument(
        "--python-version",
        type=_python_version,
        default=DEFAULT_PYTHON_VERSION,
        help="the Lambda Python runtime, default %(default)s",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument(
        "--wheel-cache",
        type=Path,
        default=WHEEL_CACHE,
        help="where downloaded wheels are kept between builds, default .cache/wheels",
    )
    parser.add_argument(
        "--function",
        dest="functions",
        action="append",
        choices=sorted(FUNCTIONS),
        help="build only this function (repeatable); default: all",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    target = Target(arguments.architecture, arguments.python_version)
    try:
        built = build(
            list(dict.fromkeys(arguments.functions or FUNCTIONS)),
            target,
            arguments.output_dir,
            arguments.wheel_cache,
        )
    except (BuildError, OSError) as error:
        print(f"build_lambdas: error: {error}", file=sys.stderr)
        return 1
    for result in built:
        print(f"{result.path}  {result.size} bytes  sha256:{result.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
