"""Connecting to the warehouse: settings from the environment, the password from SSM."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2

CONNECT_TIMEOUT_SECONDS = 10


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be reached or refuses us; the message says where and why."""


class ConfigurationError(ValueError):
    """A required setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class WarehouseSettings:
    host: str
    port: int
    user: str
    database: str
    password: str | None
    password_parameter: str | None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> WarehouseSettings:
        missing = [name for name in ("DWH_HOST", "DWH_USER") if not environ.get(name)]
        if missing:
            raise ConfigurationError(f"missing environment variable(s): {', '.join(missing)}")
        if not environ.get("DWH_PASSWORD") and not environ.get("DWH_PASSWORD_PARAM"):
            raise ConfigurationError(
                "set DWH_PASSWORD_PARAM (the SSM SecureString parameter holding the warehouse "
                "password) or, outside AWS, DWH_PASSWORD"
            )
        try:
            port = int(environ.get("DWH_PORT", "5432"))
        except ValueError as error:
            raise ConfigurationError(f"DWH_PORT is not a port number: {error}") from error
        return cls(
            host=environ["DWH_HOST"],
            port=port,
            user=environ["DWH_USER"],
            database=environ.get("DWH_DATABASE", "clickstream_dw"),
            password=environ.get("DWH_PASSWORD") or None,
            password_parameter=environ.get("DWH_PASSWORD_PARAM") or None,
        )

    @property
    def description(self) -> str:
        """Where we connect, for messages; never the password."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


_password_cache: dict[str, str] = {}
# botocore logs every response body at DEBUG, the decrypted SecureString included.
_RESPONSE_BODY_LOGGER = "botocore.parsers"


@contextmanager
def _response_bodies_not_logged() -> Iterator[None]:
    """Keep botocore's response bodies out of the logs, even when DEBUG is on (Lambda's log level
    setting, a debugging session), while the password is read."""
    body_logger = logging.getLogger(_RESPONSE_BODY_LOGGER)
    level = body_logger.level
    body_logger.setLevel(max(level, logging.INFO))
    try:
        yield
    finally:
        body_logger.setLevel(level)


def resolve_password(settings: WarehouseSettings, ssm_client_factory: Callable[[], Any]) -> str:
    """The password: DWH_PASSWORD, or the SSM SecureString, read once per warm Lambda."""
    if settings.password:
        return settings.password
    name = settings.password_parameter
    if name not in _password_cache:
        ssm = ssm_client_factory()
        with _response_bodies_not_logged():
            response = ssm.get_parameter(Name=name, WithDecryption=True)
        _password_cache[name] = response["Parameter"]["Value"]
    return _password_cache[name]


def connect(settings: WarehouseSettings, password: str, application_name: str):
    """A psycopg2 connection in UTC; WarehouseUnavailable with a clear message if it fails."""
    try:
        return psycopg2.connect(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            password=password,
            dbname=settings.database,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=application_name,
            options="-c TimeZone=UTC",
        )
    except psycopg2.OperationalError as error:
        reason = " ".join(str(error).split())
        raise WarehouseUnavailable(
            f"cannot connect to the warehouse {settings.description}: {reason}"
        ) from error
