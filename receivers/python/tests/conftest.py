"""A throwaway Postgres (or WALHOOK_SYNC_TEST_PG_URL's server), a source and a replica
database in it, and the receiver running as a real process against the replica."""

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from support import SECRET, Receiver

RECEIVER = Path(__file__).resolve().parent.parent / "receiver.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin():
    """The newest server binaries of Debian's layout, or PG_BIN, or those on PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent
    pytest.fail("no Postgres server binaries: install postgresql-15, set PG_BIN or WALHOOK_SYNC_TEST_PG_URL")


@pytest.fixture(scope="session")
def server_url():
    if os.environ.get("WALHOOK_SYNC_TEST_PG_URL"):
        yield os.environ["WALHOOK_SYNC_TEST_PG_URL"]
        return
    base = Path(tempfile.mkdtemp(prefix="walhook-sync-pg-"))
    as_owner = []
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port, bindir = base / "data", free_port(), pg_bin()
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run(as_owner + [bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8"], **quiet)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(as_owner + [bindir / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-o", options, "start"], **quiet)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_owner + [bindir / "pg_ctl", "-D", data, "-m", "fast", "stop"], **quiet)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def database_urls(server_url):
    """(source, replica): two fresh databases, dropped at the end."""
    prefix = f"walhook_sync_{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_source", f"{prefix}_replica"]
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"CREATE DATABASE {name}")
    urls = [psycopg.conninfo.make_conninfo(server_url, dbname=name) for name in names]
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA app")
    yield urls
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def start_receiver(replica_url, log_path, *extra):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, str(RECEIVER), "--listen", "127.0.0.1:0", "--database-url", replica_url, "--secret", SECRET, *extra],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        pytest.fail(f"receiver did not start: {line!r}; log: {Path(log_path).read_text()}")
    return Receiver(process, "http://" + line.split()[-1], log_path)


@pytest.fixture(scope="session")
def receiver(database_urls, tmp_path_factory):
    running = start_receiver(database_urls[1], tmp_path_factory.mktemp("receiver") / "stderr.log")
    yield running
    running.stop()


@pytest.fixture
def replica(database_urls):
    with psycopg.connect(database_urls[1], autocommit=True) as conn:
        yield conn


@pytest.fixture
def source(database_urls):
    with psycopg.connect(database_urls[0], autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")  # as walhook prints values
        yield conn


@pytest.fixture
def table(replica, request):
    """A function creating a replica table `app.<test name>` with the given columns."""

    def create(columns, name=None):
        name = "app." + re.sub(r"\W", "_", name or request.node.name)[:60]
        replica.execute(f"CREATE TABLE {name} ({columns})")
        return name

    return create
