"""tools/build_lambdas.py: the two deployment zips, reproducible, complete, and working.

The first run downloads the pinned wheels into .cache/wheels/ (pip, from PyPI); later runs,
and every build inside one run after the first, use that cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clickstream.partitions import hour_prefix
from tests.fixtures.aws import aws_environment
from tools import build_lambdas
from tools.build_lambdas import FUNCTIONS, BuildError, LambdaFunction, Target

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPOSITORY_ROOT / "tools" / "build_lambdas.py"
BUILT_FUNCTIONS = ["ingest", "etl"]
# The Python running these tests: a zip built for it has compiled wheels that import here.
RUNNING_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
PINS = build_lambdas.pinned_versions((REPOSITORY_ROOT / "requirements.txt").read_text())


def zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def default_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zips as `make build` makes them (x86_64, Python 3.12), in a folder of their own."""
    output_dir = tmp_path_factory.mktemp("lambda")
    build_lambdas.build(BUILT_FUNCTIONS, Target(), output_dir)
    return output_dir


@pytest.fixture(scope="module")
def build_for_this_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zips built for the interpreter running the tests (x86_64), to run their code here."""
    output_dir = tmp_path_factory.mktemp("lambda-native")
    build_lambdas.build(BUILT_FUNCTIONS, Target(python_version=RUNNING_PYTHON), output_dir)
    return output_dir


def test_building_twice_gives_byte_identical_zips(default_build, tmp_path):
    build_lambdas.build(BUILT_FUNCTIONS, Target(), tmp_path)

    for name in BUILT_FUNCTIONS:
        first = (default_build / f"{name}.zip").read_bytes()
        assert (tmp_path / f"{name}.zip").read_bytes() == first, name


@pytest.mark.parametrize("name", BUILT_FUNCTIONS)
def test_zip_entries_are_sorted_files_with_a_fixed_time_mode_and_compression(default_build, name):
    with zipfile.ZipFile(default_build / f"{name}.zip") as archive:
        entries = archive.infolist()

    assert [entry.filename for entry in entries] == sorted(entry.filename for entry in entries)
    for entry in entries:
        assert not entry.is_dir()
        assert entry.date_time == (1980, 1, 1, 0, 0, 0)
        assert entry.external_attr >> 16 == 0o100644
        assert entry.compress_type == zipfile.ZIP_DEFLATED


def test_the_ingest_zip_holds_its_handler_the_shared_package_its_contract_and_fastjsonschema(
    default_build,
):
    names = set(zip_names(default_build / "ingest.zip"))

    assert "handler.py" in names
    assert "clickstream/__init__.py" in names
    assert "clickstream/contract.py" in names
    assert "clickstream/_files/contract/clickstream-event.schema.json" in names
    assert "fastjsonschema/__init__.py" in names


def test_the_ingest_zip_holds_no_psycopg2_no_boto3_and_no_bytecode(default_build):
    names = zip_names(default_build / "ingest.zip")

    assert not [name for name in names if name.startswith(("psycopg2", "boto3", "botocore"))]
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_the_handler_in_the_ingest_zip_is_lambda_src_ingest_handler(default_build):
    with zipfile.ZipFile(default_build / "ingest.zip") as archive:
        packaged = archive.read("handler.py")

    assert packaged == (REPOSITORY_ROOT / "lambda_src" / "ingest" / "handler.py").read_bytes()


def test_the_zips_carry_the_versions_pinned_in_requirements_txt(default_build):
    names = zip_names(default_build / "ingest.zip")

    assert f"fastjsonschema-{PINS['fastjsonschema']}.dist-info/METADATA" in names


def test_the_etl_zip_holds_its_handler_the_shared_package_fastjsonschema_and_psycopg2(
    default_build,
):
    names = set(zip_names(default_build / "etl.zip"))

    assert "handler.py" in names
    assert "clickstream/_files/contract/clickstream-event.schema.json" in names
    assert "fastjsonschema/__init__.py" in names
    assert "psycopg2/__init__.py" in names
    assert f"psycopg2_binary-{PINS['psycopg2-binary']}.dist-info/METADATA" in names
    # libpq and its companions, which the compiled module links against
    assert any(re.match(r"psycopg2_binary\.libs/libpq-.*\.so", name) for name in names)


@pytest.mark.parametrize(("architecture", "machine"), [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_the_etl_zip_holds_its_compiled_wheels_for_the_lambda_architecture_and_python(
    tmp_path, architecture, machine
):
    [built] = build_lambdas.build(["etl"], Target(architecture, "3.12"), tmp_path)

    extensions = sorted(
        name
        for name in zip_names(built.path)
        if name.startswith(("psycopg2/_psycopg", "orjson/orjson")) and name.endswith(".so")
    )
    assert extensions == [
        f"orjson/orjson.cpython-312-{machine}-linux-gnu.so",
        f"psycopg2/_psycopg.cpython-312-{machine}-linux-gnu.so",
    ]


def test_the_packaged_ingest_handler_finds_its_contract_and_writes_to_s3(
    build_for_this_python, aws, raw_bucket, tmp_path
):
    unpacked = tmp_path / "ingest"
    with zipfile.ZipFile(build_for_this_python / "ingest.zip") as archive:
        archive.extractall(unpacked)
    script = """
import json, sys
import fastjsonschema, handler
from clickstream import contract
response = handler.handler(json.loads(sys.argv[1]), None)
print(json.dumps({"status": response["statusCode"], "contract": str(contract.CONTRACT_PATH),
                  "handler": handler.__file__, "fastjsonschema": fastjsonschema.__file__}))
"""
    received_at = datetime.now(UTC)
    request = {
        "version": "2.0",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": "POST", "userAgent": "packaged-test"},
            "requestId": "req-packaged",
            # The Lambda believes API Gateway's receive time only near its own clock.
            "timeEpoch": int(received_at.timestamp() * 1000),
        },
        "body": json.dumps({"eventName": "page_view", "pageUrl": "https://shop.example.com/"}),
        "isBase64Encoded": False,
    }
    # -S: no site-packages but what PYTHONPATH names; boto3 stands in for the Lambda runtime's.
    environment = {
        **aws_environment(aws.endpoint_url),
        "RAW_BUCKET": raw_bucket,
        "PYTHONPATH": os.pathsep.join([str(unpacked), sysconfig.get_paths()["purelib"]]),
    }
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, json.dumps(request)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 202
    assert Path(report["handler"]) == unpacked / "handler.py"
    assert Path(report["fastjsonschema"]).is_relative_to(unpacked)
    assert Path(report["contract"]) == (
        unpacked / "clickstream/_files/contract/clickstream-event.schema.json"
    )
    listing = aws.client("s3").list_objects_v2(Bucket=raw_bucket)
    [stored] = listing["Contents"]
    assert stored["Key"].startswith(hour_prefix(received_at))


def test_the_source_files_of_a_function_are_its_handler_the_package_and_its_artefacts():
    entries = dict(build_lambdas.source_files(FUNCTIONS["ingest"]))

    assert entries["handler.py"] == REPOSITORY_ROOT / "lambda_src/ingest/handler.py"
    assert (
        entries["clickstream/mapping.py"] == REPOSITORY_ROOT / "lambda_src/clickstream/mapping.py"
    )
    assert entries["clickstream/_files/contract/clickstream-event.schema.json"] == (
        REPOSITORY_ROOT / "files/contract/clickstream-event.schema.json"
    )
    package_modules = {name for name in entries if name.startswith("clickstream/")}
    on_disk = {
        f"clickstream/{path.relative_to(REPOSITORY_ROOT / 'lambda_src/clickstream').as_posix()}"
        for path in (REPOSITORY_ROOT / "lambda_src/clickstream").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert package_modules - on_disk == {
        "clickstream/_files/contract/clickstream-event.schema.json"
    }
    assert on_disk <= package_modules


def test_a_function_without_its_handler_is_a_clear_error(tmp_path):
    missing = LambdaFunction("ghost", tmp_path / "handler.py", (), ())

    with pytest.raises(BuildError, match=r"ghost handler .* does not exist"):
        build_lambdas.source_files(missing)


def test_a_dependency_not_pinned_in_requirements_txt_is_a_clear_error():
    pins = build_lambdas.pinned_versions("boto3==1.0\nPsycopg2_Binary == 2.9.1  # comment\n")

    assert build_lambdas.pinned_version("psycopg2-binary", pins) == "2.9.1"
    with pytest.raises(BuildError, match="fastjsonschema is not pinned"):
        build_lambdas.pinned_version("fastjsonschema", pins)


def test_with_the_wheels_cached_a_build_needs_no_package_index(
    default_build, tmp_path, monkeypatch
):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any pip download would now fail

    built = build_lambdas.build(BUILT_FUNCTIONS, Target(), tmp_path)

    assert [result.path.name for result in built] == [f"{n}.zip" for n in BUILT_FUNCTIONS]


def test_the_cli_prints_each_zips_path_size_and_sha256(default_build, tmp_path):
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    for line, name in zip(result.stdout.splitlines(), BUILT_FUNCTIONS, strict=True):
        path, size, digest = re.fullmatch(
            r"(\S+)  (\d+) bytes  sha256:([0-9a-f]{64})", line
        ).groups()
        data = Path(path).read_bytes()
        assert Path(path) == tmp_path / f"{name}.zip"
        assert int(size) == len(data)
        assert digest == hashlib.sha256(data).hexdigest()


def test_a_failed_build_exits_non_zero_says_why_and_keeps_the_previous_zips(
    default_build, tmp_path
):
    previous = (default_build / "ingest.zip").read_bytes()
    output_dir = tmp_path / "lambda"
    output_dir.mkdir()
    (output_dir / "ingest.zip").write_bytes(previous)
    command = [
        sys.executable, str(BUILD_SCRIPT), "--function", "ingest",
        "--python-version", "3.9", "--wheel-cache", str(tmp_path / "empty-cache"),
        "--output-dir", str(output_dir),
    ]  # fmt: skip

    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_NO_INDEX": "1"},  # the download fails, and offline
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("build_lambdas: error: pip could not download")
    assert "fastjsonschema==" in result.stderr
    assert (output_dir / "ingest.zip").read_bytes() == previous
    assert [path.name for path in output_dir.iterdir()] == ["ingest.zip"]  # no staging left


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--architecture", "sparc"], "invalid choice: 'sparc'"),
        (["--python-version", "twelve"], "expected a Lambda Python runtime such as 3.12"),
        (["--function", "billing"], "invalid choice: 'billing'"),
    ],
)
def test_the_cli_refuses_unknown_options_with_a_message(arguments, complaint):
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert complaint in result.stderr
