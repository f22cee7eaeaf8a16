"""The machine's end of the links to the local platform's private-network DWH instance.

The DWH instance boots with no network but its own loopback (``tools/molecule_nspawn.py create
--private-network``): what crosses its boundary goes through Unix sockets in a directory of this
machine that is bind-mounted into it, served on its loopback by systemd-socket-proxyd. This daemon
connects those sockets to TCP on this machine:

- ``--unix-to-tcp PATH=HOST:PORT`` listens on the Unix socket PATH and connects each connection to
  HOST:PORT: the instance's ``--reach`` links (its 127.0.0.1:4566 leads to the emulator, moto).
- ``--tcp-to-unix HOST:PORT=PATH`` listens on HOST:PORT and connects each connection to the Unix
  socket PATH: the instance's ``--expose`` links (PostgreSQL and the dashboards at the
  instance's address as the machine sees it, and the dashboards' port forward on 127.0.0.1, the
  stand-in for an SSM port-forwarding session).

A connection whose far end does not answer is closed at once; a TCP listener therefore always
accepts, even when the service behind it is down. Standard library only (asyncio). One JSON log
line per link at start and per connection whose far end does not answer. SIGTERM (or SIGINT)
closes the listeners and removes the socket files this daemon made.

Not production code: it exists only for the local inventory (make up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONNECT_TIMEOUT_SECONDS = 5.0
CHUNK_BYTES = 65536
# How long the listeners get to close on shutdown before the daemon exits anyway.
CLOSE_TIMEOUT_SECONDS = 2.0


def log(message: str, **fields: Any) -> None:
    print(
        json.dumps({"time": time.strftime("%FT%TZ", time.gmtime()), "message": message, **fields}),
        flush=True,
    )


@dataclass(frozen=True)
class Endpoint:
    """A TCP address (host and port) or a Unix socket (path)."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    @classmethod
    def tcp(cls, text: str) -> Endpoint:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not HOST:PORT")
        return cls(host=host, port=int(port))

    @classmethod
    def unix(cls, text: str) -> Endpoint:
        if not text.startswith("/"):
            raise ValueError(f"{text!r} is not an absolute socket path")
        return cls(path=Path(text))

    def __str__(self) -> str:
        return str(self.path) if self.path else f"{self.host}:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.path:
            return await asyncio.open_unix_connection(str(self.path))
        return await asyncio.open_connection(self.host, self.port)


@dataclass(frozen=True)
class Link:
    listen: Endpoint
    target: Endpoint

    @classmethod
    def parse(cls, text: str, kind: str) -> Link:
        listen, separator, target = text.partition("=")
        if not separator:
            raise ValueError(f"{text!r}: LISTEN=TARGET")
        if kind == "unix-to-tcp":
            return cls(Endpoint.unix(listen), Endpoint.tcp(target))
        return cls(Endpoint.tcp(listen), Endpoint.unix(target))


async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy one direction until its end, then half-close the other side (as TCP does)."""
    try:
        while data := await source.read(CHUNK_BYTES):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except OSError:
        # A reset on either side ends the connection in both directions.
        sink.transport.abort()


async def carry(
    link: Link, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    try:
        target_reader, target_writer = await asyncio.wait_for(
            link.target.connect(), CONNECT_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError) as error:
        log(
            "link target does not answer",
            listen=str(link.listen),
            target=str(link.target),
            error=str(error) or type(error).__name__,
        )
        client_writer.transport.abort()
        return
    try:
        await asyncio.gather(pipe(client_reader, target_writer), pipe(target_reader, client_writer))
    finally:
        for writer in (client_writer, target_writer):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Links:
    """The listeners of every link, and the socket files they made."""

    def __init__(self, links: list[Link]) -> None:
        self.links = links
        self.servers: list[asyncio.Server] = []
        # Each socket file with the inode it had when this daemon made it.
        self.socket_files: dict[Path, int] = {}

    async def start(self) -> None:
        for link in self.links:

            async def handle(reader, writer, link: Link = link) -> None:
                await carry(link, reader, writer)

            path = link.listen.path
            if path is not None:
                # A socket file left by a daemon that was killed: nothing listens on it any more.
                if path.is_socket():
                    path.unlink()
                server = await asyncio.start_unix_server(handle, path=str(path))
                self.socket_files[path] = path.stat().st_ino
            else:
                server = await asyncio.start_server(handle, link.listen.host, link.listen.port)
            self.servers.append(server)
            log("link", listen=str(link.listen), target=str(link.target))

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(server.wait_closed() for server in self.servers)),
                CLOSE_TIMEOUT_SECONDS,
            )
        for path, inode in self.socket_files.items():
            # Only the file this daemon made: a newer daemon's socket at the same path stays.
            with contextlib.suppress(FileNotFoundError):
                status = path.stat()
                if stat.S_ISSOCK(status.st_mode) and status.st_ino == inode:
                    path.unlink()


async def serve(links: list[Link]) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stopping.set)
    daemon = Links(links)
    try:
        await daemon.start()
    except OSError as error:
        log("cannot listen", error=str(error))
        await daemon.stop()
        return 1
    log("ready", links=len(links))
    await stopping.wait()
    await daemon.stop()
    log("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="the local platform's state directory (its pid file for this daemon is there)",
    )
    parser.add_argument(
        "--unix-to-tcp",
        action="append",
        default=[],
        metavar="PATH=HOST:PORT",
        help="listen on the Unix socket PATH, connect to HOST:PORT",
    )
    parser.add_argument(
        "--tcp-to-unix",
        action="append",
        default=[],
        metavar="HOST:PORT=PATH",
        help="listen on HOST:PORT, connect to the Unix socket PATH",
    )
    arguments = parser.parse_args(argv)
    try:
        links = [Link.parse(text, "unix-to-tcp") for text in arguments.unix_to_tcp] + [
            Link.parse(text, "tcp-to-unix") for text in arguments.tcp_to_unix
        ]
    except ValueError as error:
        parser.error(str(error))
    if not links:
        parser.error("no link: give --unix-to-tcp or --tcp-to-unix")
    # The socket files are for root only: the instance's proxies run as its root.
    os.umask(0o077)
    return asyncio.run(serve(links))


if __name__ == "__main__":
    sys.exit(main())
