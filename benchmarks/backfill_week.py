"""A week's backfill, end to end, the way an operator runs it.

    .venv/bin/python benchmarks/backfill_week.py --events 200000

Starts its own PostgreSQL (migrated clickstream_dw, the ETL writer as a login) and moto server,
writes a week of generated raw objects (EVENTS_PER_OBJECT events each) into the raw bucket, puts
the writer's password in SSM, then runs, and prints the output of:

    ansible-playbook playbooks/backfill.yml --check   (what would load, per hour)
    ansible-playbook playbooks/backfill.yml           (the load, a day per chunk)
    ansible-playbook playbooks/backfill.yml           (again: nothing to do)

in the module's direct mode (the same load code as Lambda ETL; the emulator cannot run Lambda).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY / "lambda_src"), str(REPOSITORY), str(REPOSITORY / "benchmarks")]

import boto3  # noqa: E402
import etl_throughput  # noqa: E402

from tests.fixtures.aws import REGION, aws_environment  # noqa: E402
from tests.fixtures.postgres import PostgresCluster, remove_cluster  # noqa: E402

PASSWORD_PARAMETER = "/clickstream/local/warehouse/etl-writer-password"


def run_playbook(endpoint: str, extra_vars: dict, *options: str) -> float:
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i", "inventories/local", "playbooks/backfill.yml", "-e", json.dumps(extra_vars), *options,
    ]  # fmt: skip
    print(f"\n$ ansible-playbook playbooks/backfill.yml {' '.join(options)}", flush=True)
    started = time.perf_counter()
    subprocess.run(
        command, cwd=REPOSITORY, env={**os.environ, **aws_environment(endpoint)}, check=False
    )
    elapsed = time.perf_counter() - started
    print(f"(wall time {elapsed:.1f} s)", flush=True)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    arguments = parser.parse_args()

    cluster = PostgresCluster(
        root=Path(tempfile.mkdtemp(prefix="clickstream-backfill-pg-"))
    ).start()
    moto, endpoint = etl_throughput.start_moto()
    try:
        connection = etl_throughput.fresh_database(cluster, "clickstream_dw")
        connection.close()
        password = secrets.token_urlsafe(18)
        cluster.execute_autocommit(
            f"CREATE ROLE clickstream_etl LOGIN PASSWORD '{password}' "
            "IN ROLE clickstream_etl_writer"
        )
        records = etl_throughput.generated_records(arguments.events)
        s3 = boto3.client("s3", region_name=REGION, **etl_throughput._credentials(endpoint))
        s3.create_bucket(
            Bucket=etl_throughput.BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        objects, first, last = etl_throughput.upload_objects(s3, records)
        ssm = boto3.client("ssm", region_name=REGION, **etl_throughput._credentials(endpoint))
        ssm.put_parameter(Name=PASSWORD_PARAMETER, Value=password, Type="SecureString")
        print(f"raw bucket: {objects:,} objects, {len(records):,} events, {first:%Y-%m-%dT%H} to "
              f"{last:%Y-%m-%dT%H}")  # fmt: skip
        extra_vars = {
            "backfill_start": f"{first:%Y-%m-%dT%H}",
            "backfill_end": f"{last:%Y-%m-%dT%H}",
            "backfill_mode": "direct",
            "backfill_hosts": "localhost",
            "backfill_chunk_hours": 24,
            "backfill_library_path": str(REPOSITORY / "lambda_src"),
            "warehouse_port": cluster.port,
            "secrets_etl_writer_password_parameter": PASSWORD_PARAMETER,
            "ansible_python_interpreter": sys.executable,
        }
        run_playbook(endpoint, extra_vars, "--check")
        run_playbook(endpoint, extra_vars)
        run_playbook(endpoint, extra_vars)
    finally:
        moto.terminate()
        remove_cluster(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
