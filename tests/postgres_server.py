"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, a loopback port.

Uses the server binaries of Debian's ``postgresql`` package (``initdb``/``pg_ctl`` on the PATH or
under ``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` user (``runuser``). Every step has a time limit; whatever goes
wrong comes back as the reason to skip, never as a hang.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

USER = "bulkinfer"
START_TIMEOUT_S = 30


@dataclass(frozen=True)
class Server:
    """A running server: connect as ``USER`` with ``password`` to ``host:port``."""

    host: str
    port: int
    password: str

    def url(self, driver: str = "postgresql+psycopg", database: str = "postgres") -> str:
        """A SQLAlchemy URL without the password."""
        return f"{driver}://{USER}@{self.host}:{self.port}/{database}"


class Unavailable(Exception):
    """Why no server could be started (the test skips with this reason)."""


def _bindir() -> str:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if versions:
        return os.path.dirname(versions[-1])
    raise Unavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql "
        "package (apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], user: str | None, timeout: float) -> None:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{os.path.basename(argv[-1])} took over {timeout:.0f} s") from None
    except FileNotFoundError as exc:
        raise Unavailable(str(exc)) from None
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{' '.join(argv[:6])} failed: {' | '.join(tail)}")


@contextmanager
def postgres_server() -> Iterator[Server]:
    """Start a server (raising :class:`Unavailable` with the reason if it cannot), stop it."""
    bindir = _bindir()
    user = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no 'postgres' user to run as") from None
        user = "postgres"
    root = tempfile.mkdtemp(prefix="bulkinfer-pg-")  # in /tmp: reachable by that user
    password = os.urandom(12).hex()
    started = False
    try:
        if user is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        pwfile = os.path.join(root, "pw")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        if user is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        data = os.path.join(root, "data")
        initdb = [f"{bindir}/initdb", "-D", data, "-U", USER, f"--pwfile={pwfile}"]
        _run([*initdb, "-A", "scram-sha-256", "-E", "UTF8", "--no-locale"], user, timeout=120)
        port = _free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        log = os.path.join(root, "server.log")
        pg_ctl = [f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "-t", str(START_TIMEOUT_S)]
        try:
            _run([*pg_ctl, "-o", options, "start"], user, timeout=START_TIMEOUT_S + 15)
        except Unavailable as exc:
            server_log = open(log).read().strip().splitlines()[-3:] if os.path.exists(log) else []
            raise Unavailable(f"{exc} {' | '.join(server_log)}") from None
        started = True
        yield Server("127.0.0.1", port, password)
    finally:
        if started:
            stop = [f"{bindir}/pg_ctl", "-D", os.path.join(root, "data"), "-m", "immediate"]
            try:
                _run([*stop, "-w", "-t", "30", "stop"], user, timeout=45)
            except Unavailable:
                pass
        shutil.rmtree(root, ignore_errors=True)
