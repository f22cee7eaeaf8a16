"""Fixtures shared by every test: a moto server (AWS) and a real PostgreSQL, both on loopback."""

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.postgres",
    "tests.fixtures.warehouse",
]
