"""The real `loyalty` command, run in subprocesses against a temporary SQLite file (and, for the schema check,
a fresh PostgreSQL database): db upgrade, apply, token create/list/revoke, demo, verify, serve.

Start-up of the command costs about a second, so most tests share one store (`cli`, module scope) and check the
store's content in-process.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, select, text

from loyalty.config import Settings
from loyalty.domain.errors import TokenInvalid
from loyalty.services import programfile, tokens
from loyalty.services.demo import example_path
from loyalty.services.runtime import Runtime
from loyalty.storage import catalog_repo, migrate
from loyalty.storage.tables import currencies, databases, programs, promotions, tier_groups, tiers

PG_ADMIN_URL = os.environ.get("LOYALTY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_CLI_DB = os.environ.get("LOYALTY_TEST_PG_DB", "loyalty_test") + "_cli"
CATALOGUE = [databases, programs, currencies, promotions, tier_groups, tiers]


def command_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(LOYALTY_DATABASE_URL=url, NO_COLOR="1", COLUMNS="200", TERM="dumb", PYTHONUNBUFFERED="1",
               _TYPER_STANDARD_TRACEBACK="1")  # rich tracebacks take seconds to render
    return env


def loyalty(cwd: Path, url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loyalty.cli", *args], cwd=cwd, env=command_env(url),
                          capture_output=True, text=True, timeout=timeout)


def loyalty_many(cwd: Path, url: str, *commands: list[str], timeout: float = 60
                 ) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at the same time (start-up dominates their run time)."""
    procs = [(cmd, subprocess.Popen([sys.executable, "-m", "loyalty.cli", *cmd], cwd=cwd, env=command_env(url),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for cmd in commands]
    results = []
    for cmd, proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


@dataclass
class Cli:
    """One SQLite store shared by the tests of this module, and the outputs of the set-up commands."""

    dir: Path
    url: str
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return loyalty(self.dir, self.url, *args)

    def run_many(self, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
        return loyalty_many(self.dir, self.url, *commands)

    def runtime(self) -> Runtime:
        return Runtime.from_settings(Settings(database_url=self.url, run_jobs=False))


def snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    def read(conn):  # type: ignore[no-untyped-def]
        return {t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr) for t in CATALOGUE}

    return rt.store.read(read)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    work = tmp_path_factory.mktemp("cli")
    c = Cli(work, f"sqlite:///{work / 'loyalty.db'}")
    c.outputs["upgrade"] = c.run("db", "upgrade")
    c.outputs["upgrade again"], c.outputs["apply"] = c.run_many(["db", "upgrade"], ["apply", str(example_path())])
    c.outputs["apply again"] = c.run("apply", str(example_path()))
    yield c


@pytest.fixture
def rt(cli: Cli) -> Iterator[Runtime]:  # shadows the store-parametrized fixture: this module runs on its own file
    runtime = cli.runtime()
    yield runtime
    runtime.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`loyalty serve` on a free port, in the background."""

    def __init__(self, cwd: Path, url: str, *extra: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (cwd / f"serve-{self.port}.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loyalty.cli", "serve", "--port", str(self.port), *extra],
            cwd=cwd, env=command_env(url), stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"`loyalty serve` exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"`loyalty serve` did not answer within {timeout}s:\n{self.output()}")

    def post(self, endpoint: str, **params: Any) -> httpx.Response:
        return httpx.post(f"{self.base}/api/v1.1/{endpoint}", json=params, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# --- db upgrade and apply ------------------------------------------------------------------------------------

def test_db_upgrade_creates_the_schema_then_says_it_is_current(cli, rt):
    first, again = cli.outputs["upgrade"], cli.outputs["upgrade again"]
    assert first.returncode == 0, first.stderr
    head = migrate.head_revision()
    assert head and head in first.stdout and "upgraded" in first.stdout
    assert again.returncode == 0, again.stderr
    assert "current" in again.stdout and "upgraded" not in again.stdout
    assert migrate.is_current(rt.store.engines.reader)


def test_apply_creates_the_example_and_prints_the_changes(cli, rt):
    out = cli.outputs["apply"]
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for words in [("created", "database 1"), ("created", "program 123"), ("created", "currency stars"),
                  ("created", "promotion 5"), ("created", "promotion 6"), ("created", "tier group 10"),
                  ("created", "tier 14")]:
        assert any(all(w in line for w in words) for line in lines), (words, out.stdout)
    assert "no changes" not in out.stdout
    prog = rt.store.read(lambda c: catalog_repo.get_program(c, 123))
    assert prog is not None and prog.name == "Stars" and prog.db_id == 1
    assert [c.eid for c in rt.store.read(lambda c: catalog_repo.program_currencies(c, 123))] == [
        "stars", "status_points"]


def test_apply_again_prints_no_changes(cli):
    out = cli.outputs["apply again"]
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no changes"


def test_apply_an_invalid_file_fails_lists_every_problem_and_changes_nothing(cli, rt):
    doc = yaml.safe_load(example_path().read_text(encoding="utf-8"))
    p = doc["programs"][0]
    p["name"] = "Changed"                                          # a valid change that must not happen
    p["currencies"][1]["precision"] = 9
    p["promotions"][1]["end_date"] = "2020-01-01T00:00:00Z"        # schema errors hide this one (see the
    p["tier_groups"][0]["tiers"][2]["threshold"] = "1"             # xfail in test_programfile_schema.py)
    p["colour"] = "blue"
    bad = cli.dir / "broken-program.yaml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    before = snapshot(rt)

    out = cli.run("apply", str(bad))
    assert out.returncode != 0
    assert "no changes" not in out.stdout and "created" not in out.stdout and "updated" not in out.stdout
    problem_lines = [line for line in out.stderr.splitlines() if "programs[0]" in line]
    for path in ("programs[0].currencies[1].precision", "programs[0].colour"):
        assert any(path in line and bad.name in line for line in problem_lines), (path, out.stderr)
    assert snapshot(rt) == before

    # a file that is valid on its own but not against the store: also every problem, with the file name
    p = yaml.safe_load(example_path().read_text(encoding="utf-8"))["programs"][0]
    p["currencies"][0]["precision"] = 3
    p["database"] = 7
    bad.write_text(yaml.safe_dump({"programs": [p]}, sort_keys=False), encoding="utf-8")
    out = cli.run("apply", str(bad))
    assert out.returncode != 0
    for path in ("programs[0].currencies[0].precision", "programs[0].database"):
        assert any(path in line and bad.name in line for line in out.stderr.splitlines()), (path, out.stderr)
    assert snapshot(rt) == before


def test_apply_dry_run_shows_changes_and_changes_nothing(cli, rt):
    doc = yaml.safe_load(example_path().read_text(encoding="utf-8"))
    doc["programs"][0]["promotions"][0]["name"] = "Welcome gift"
    changed = cli.dir / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    before = snapshot(rt)
    out = cli.run("apply", "--dry-run", str(changed))
    assert out.returncode == 0, out.stderr
    assert "promotion 5" in out.stdout and "dry run" in out.stdout
    assert snapshot(rt) == before


# --- tokens --------------------------------------------------------------------------------------------------------

def test_token_create_quiet_prints_only_the_token(cli, rt):
    out = cli.run("token", "create", "--name", "ci-quiet", "--role", "admin", "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1
    raw = out.stdout.strip()
    assert raw.startswith(tokens.PREFIX) and " " not in raw and len(raw) > 30
    principal = tokens.authenticate(rt, raw)
    assert principal.name == "ci-quiet" and principal.has("admin") and principal.has("loyalty:write")
    assert principal.programs is None


def test_token_create_prints_the_token_once_with_details_and_scopes_it(cli, rt):
    out = cli.run("token", "create", "--name", "shop-reader", "--role", "loyalty:read", "--role", "profiles:write",
                  "--program", "123")
    assert out.returncode == 0, out.stderr
    found = [w for w in out.stdout.split() if w.startswith(tokens.PREFIX)]
    assert len(found) == 1, out.stdout
    raw = found[0]
    assert out.stdout.count(raw) == 1
    assert "shop-reader" in out.stdout and "loyalty:read" in out.stdout and "profiles:write" in out.stdout
    assert "once" in out.stdout
    principal = tokens.authenticate(rt, raw)
    assert principal.programs == frozenset({123})
    assert principal.may_program(123) and not principal.may_program(124)
    assert principal.has("loyalty:read") and not principal.has("loyalty:write")
    info = next(t for t in tokens.list_tokens(rt) if t.name == "shop-reader")
    assert info.programs == [123]


def test_unknown_program_role_token_or_file_fail(cli, rt):
    count = len(tokens.list_tokens(rt))
    unknown_program, unknown_role, unknown_token, missing_file = cli.run_many(
        ["token", "create", "--name", "ghost", "--role", "admin", "--program", "999"],
        ["token", "create", "--name", "boss", "--role", "superuser"],
        ["token", "revoke", "no-such-token"],
        ["apply", str(cli.dir / "nowhere.yaml")],
    )
    for out in (unknown_program, unknown_role):
        assert out.returncode != 0, out.stdout
        assert tokens.PREFIX not in out.stdout
        assert "Traceback" not in out.stderr
    assert "999" in unknown_program.stderr
    assert "role" in unknown_role.stderr
    assert unknown_token.returncode != 0 and "Traceback" not in unknown_token.stderr
    assert missing_file.returncode != 0
    assert len(tokens.list_tokens(rt)) == count


def test_token_list_never_shows_token_values(cli, rt):
    raw_a, _ = tokens.create(rt, "list-a", ["admin"])
    raw_b, _ = tokens.create(rt, "list-b", ["loyalty:read"], [123])
    plain, as_json = cli.run_many(["token", "list"], ["token", "list", "--json"])
    for out in (plain, as_json):
        assert out.returncode == 0, out.stderr
        assert raw_a not in out.stdout and raw_b not in out.stdout
        assert raw_a[len(tokens.PREFIX) + 6:] not in out.stdout  # not even the secret part
        assert "list-a" in out.stdout and "list-b" in out.stdout
    listed = {t["name"]: t for t in json.loads(as_json.stdout)}
    assert listed["list-b"]["programs"] == [123] and listed["list-b"]["revoked"] is False
    assert raw_a.startswith(listed["list-a"]["prefix"])
    assert all("token" not in key or key == "token_id" for t in listed.values() for key in t)


def test_token_revoke_then_the_api_refuses_the_token(cli, rt):
    from fastapi.testclient import TestClient

    from loyalty.api.app import create_app

    raw, info = tokens.create(rt, "to-revoke", ["admin"])
    keep, _ = tokens.create(rt, "to-keep", ["admin"])
    body = {"loyalty_program_id": 123, "matching": "email", "email": "nobody@example.com"}
    with TestClient(create_app(rt, run_jobs=False)) as client:
        assert client.post("/api/v1.1/loyalty/account/balance", json={"token": raw, **body}).json()[
            "error_code"] != "token_invalid"
    out = cli.run("token", "revoke", str(info.id))
    assert out.returncode == 0, out.stderr
    assert "revoked" in out.stdout
    with pytest.raises(TokenInvalid):
        tokens.authenticate(rt, raw)
    with TestClient(create_app(rt, run_jobs=False)) as client:
        resp = client.post("/api/v1.1/loyalty/account/balance", json={"token": raw, **body})
        assert resp.status_code == 403 and resp.json()["error_code"] == "token_invalid"
        resp = client.post("/api/v1.1/loyalty/account/balance", json={"token": keep, **body})
        assert resp.json()["error_code"] != "token_invalid"
    listed = {t.name: t for t in tokens.list_tokens(rt)}
    assert listed["to-revoke"].revoked_at is not None and listed["to-keep"].revoked_at is None


# --- demo and verify ------------------------------------------------------------------------------------------------

def test_demo_prints_a_token_and_instructions_then_verify_says_ok(cli, rt):
    out = cli.run("demo")
    assert out.returncode == 0, out.stderr
    found = [w for w in out.stdout.split() if w.startswith(tokens.PREFIX)]
    assert found, out.stdout
    raw = found[0]
    assert tokens.authenticate(rt, raw).has("admin")
    assert "loyalty serve" in out.stdout and "/api/v1.1/" in out.stdout and "123" in out.stdout
    assert "anna@example.com" in out.stdout

    out = cli.run("verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout and "DRIFT" not in out.stdout
    checked = [w for w in out.stdout.split() if w.isdigit()]
    assert checked and int(checked[0]) >= 3, out.stdout  # the demo's members have accounts


# --- serve and the schema --------------------------------------------------------------------------------------------

def _stamp(path: Path, revision: str | None, other_tables: bool = False) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    if revision is not None:
        conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    if other_tables:
        conn.execute("CREATE TABLE databases (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()


def test_serve_refuses_a_sqlite_store_at_another_revision(tmp_path):
    path = tmp_path / "old.db"
    _stamp(path, "0000_older_than_anything")
    out = loyalty(tmp_path, f"sqlite:///{path}", "serve", "--port", str(free_port()), timeout=30)
    assert out.returncode != 0
    assert "loyalty db upgrade" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_sqlite_store_with_tables_but_no_revision(tmp_path):
    path = tmp_path / "unstamped.db"
    _stamp(path, None, other_tables=True)
    out = loyalty(tmp_path, f"sqlite:///{path}", "serve", "--port", str(free_port()), timeout=30)
    assert out.returncode != 0
    assert "loyalty db upgrade" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_on_a_new_sqlite_file_creates_the_schema_and_answers(tmp_path):
    path = tmp_path / "brand-new.db"
    url = f"sqlite:///{path}"
    assert not path.exists()
    server = Server(tmp_path, url)
    try:
        server.wait_ready()
        assert httpx.get(f"{server.base}/readyz", timeout=5).json()["status"] == "ready"
        rt = Runtime.from_settings(Settings(database_url=url, run_jobs=False))
        try:
            assert migrate.is_current(rt.store.engines.reader)
            programfile.apply_spec(rt, programfile.load(example_path()))
            raw, _ = tokens.create(rt, "serve-test", ["admin"])
            other, _ = tokens.create(rt, "serve-revoked", ["admin"])
        finally:
            rt.close()

        r = server.post("loyalty/account/balance", loyalty_program_id=123, matching="email", email="x@example.com")
        assert r.json()["error_code"] == "token_missing"
        r = server.post("profiles/add", token=raw, db_id=1, data={"email": "x@example.com"})
        assert r.status_code == 200, r.text
        r = server.post("loyalty/register_member", token=raw, loyalty_program_id=123, matching="email",
                        email="x@example.com")
        assert r.status_code == 200, r.text
        r = server.post("loyalty/account/balance", token=other, loyalty_program_id=123, matching="email",
                        email="x@example.com")
        assert r.status_code == 200 and r.json()["data"]["active_balance"] == "50.00", r.text
        used = time.monotonic()

        # revoked from the command line while the server runs: refused within seconds
        out = loyalty(tmp_path, url, "token", "revoke", "serve-revoked")
        assert out.returncode == 0, out.stderr
        time.sleep(max(0.0, used + 2.5 - time.monotonic()))  # the server caches a principal for 2 s
        r = server.post("loyalty/account/balance", token=other, loyalty_program_id=123, matching="email",
                        email="x@example.com")
        assert r.status_code == 403 and r.json()["error_code"] == "token_invalid", r.text
        r = server.post("loyalty/account/balance", token=raw, loyalty_program_id=123, matching="email",
                        email="x@example.com")
        assert r.status_code == 200, r.text
    finally:
        server.stop()


@pytest.fixture
def pg_cli_url() -> Iterator[str]:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    admin_url = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {PG_CLI_DB} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {PG_CLI_DB}"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        reason = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}: {exc}"
        if os.environ.get("LOYALTY_TEST_REQUIRE_PG") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield f"{base}/{PG_CLI_DB}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {PG_CLI_DB} WITH (FORCE)"))
        admin.dispose()


def test_serve_refuses_an_empty_postgresql_schema_until_db_upgrade(pg_cli_url, tmp_path):
    out = loyalty(tmp_path, pg_cli_url, "serve", "--port", str(free_port()), timeout=30)
    assert out.returncode != 0
    assert "loyalty db upgrade" in out.stderr
    assert "Traceback" not in out.stderr

    out = loyalty(tmp_path, pg_cli_url, "db", "upgrade")
    assert out.returncode == 0, out.stderr
    assert migrate.head_revision() in out.stdout

    server = Server(tmp_path, pg_cli_url)
    try:
        server.wait_ready()
        ready = httpx.get(f"{server.base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert "postgresql" in server.output()
        r = server.post("loyalty/account/balance", token="lty_nope", loyalty_program_id=123, matching="email",
                        email="x@example.com")
        assert r.status_code == 403 and r.json()["error_code"] == "token_invalid"
    finally:
        server.stop()
