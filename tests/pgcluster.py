"""A throwaway PostgreSQL cluster on loopback, for tests and benchmarks.

``initdb`` makes a cluster in a temporary folder, ``pg_ctl`` starts it on a
free loopback port with its socket in that folder, and it is stopped and
deleted afterwards. PostgreSQL comes from the Debian packages (``.ci/run``
installs them when missing); as root, the server runs as the ``postgres``
user, because ``initdb`` refuses to run as root.
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
from pathlib import Path

__all__ = ["Unavailable", "throwaway_cluster"]


class Unavailable(RuntimeError):
    """PostgreSQL cannot be run here (not installed, no unprivileged user)."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not candidates:
        raise Unavailable(f"PostgreSQL is not installed: no {name} on PATH or under "
                          f"/usr/lib/postgresql (.ci/run installs the Debian package)")
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a cluster; yield a SQLAlchemy URL of its ``postgres`` database."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no 'postgres' user to run "
                              "the server as") from None
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="journey-pg-"))
    root.chmod(0o755)
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", "journey", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                f"-c synchronous_commit=off -c max_connections=100")
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l",
                        str(root / "server.log"), "-w", "-t", "60", "start"],
                       check=True, capture_output=True)
        try:
            yield f"postgresql://journey@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w",
                            "stop"], capture_output=True)
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        detail = (exc.stderr or b"").decode(errors="replace").strip() or (
            log.read_text(errors="replace") if log.exists() else "")
        raise Unavailable(f"could not start PostgreSQL: {detail.splitlines()[-1:] or exc}"
                          ) from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
