"""Connect to PostgreSQL as a given user, from a given source address, and try statements.

The molecule verify playbooks use it to test what pg_hba.conf and the grants allow with real
connections. libpq cannot choose the source address of a TCP connection, so with --source the
probe connects through a one-connection relay on loopback whose outgoing socket is bound to that
address: the server sees the connection coming from --source.

    PGPASSWORD=... python3 pg_probe.py --host 127.0.2.2 --port 5432 --user U --database D \
        [--source 127.0.3.10] [--commit] "SELECT 1" "DROP TABLE t"

Prints one JSON object: {"connected": bool, "error": str|null,
"statements": [{"sql": str, "ok": bool, "error": str|null, "rows": [...]}]}. Each statement runs
in its own transaction, rolled back unless --commit.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import threading

import psycopg2

RELAY_TIMEOUT_SECONDS = 20


def _pipe(client: socket.socket, server: socket.socket) -> None:
    selector = selectors.DefaultSelector()
    selector.register(client, selectors.EVENT_READ, server)
    selector.register(server, selectors.EVENT_READ, client)
    try:
        while True:
            events = selector.select(timeout=RELAY_TIMEOUT_SECONDS)
            if not events:
                return
            for key, _ in events:
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
    finally:
        client.close()
        server.close()


def start_relay(source: str, host: str, port: int) -> int:
    """A loopback port whose one connection is forwarded to host:port from ``source``."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(RELAY_TIMEOUT_SECONDS)

    def relay() -> None:
        try:
            client, _ = listener.accept()
        except TimeoutError:
            return
        finally:
            listener.close()
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind((source, 0))
        server.connect((host, port))
        _pipe(client, server)

    threading.Thread(target=relay, daemon=True).start()
    return listener.getsockname()[1]


def probe(arguments: argparse.Namespace) -> dict:
    host, port = arguments.host, arguments.port
    if arguments.source:
        host, port = "127.0.0.1", start_relay(arguments.source, arguments.host, arguments.port)
    try:
        connection = psycopg2.connect(
            host=host, port=port, user=arguments.user, dbname=arguments.database, connect_timeout=10
        )
    except psycopg2.Error as error:
        return {"connected": False, "error": str(error).strip(), "statements": []}
    results = []
    try:
        for statement in arguments.statements:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(statement)
                    rows = cursor.fetchall() if cursor.description else []
                (connection.commit if arguments.commit else connection.rollback)()
                results.append({"sql": statement, "ok": True, "error": None, "rows": rows})
            except psycopg2.Error as error:
                connection.rollback()
                results.append(
                    {"sql": statement, "ok": False, "error": str(error).strip(), "rows": []}
                )
    finally:
        connection.close()
    return {"connected": True, "error": None, "statements": results}


def main() -> int:
    parser = argparse.ArgumentParser(description="Try statements as a PostgreSQL user.")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--source", help="source address of the TCP connection")
    parser.add_argument("--commit", action="store_true", help="commit each statement")
    parser.add_argument("statements", nargs="*")
    print(json.dumps(probe(parser.parse_args()), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
