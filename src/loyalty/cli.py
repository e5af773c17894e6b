"""The `loyalty` command: serve, worker, db upgrade, apply, token, demo, verify."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from loyalty.config import Settings
from loyalty.domain.errors import LoyaltyError
from loyalty.services import schema, tokens
from loyalty.services.runtime import Runtime

app = typer.Typer(help="Loyalty Engine: a self-hosted loyalty-program engine.", no_args_is_help=True,
                  add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")


def _runtime(check_schema: bool = True) -> Runtime:
    rt = Runtime.from_settings(Settings())
    if check_schema:
        try:
            schema.ensure_current(rt)
        except schema.SchemaOutOfDate as exc:
            typer.secho(str(exc), fg="red", err=True)
            raise typer.Exit(2) from None
    return rt


def _fail(error: LoyaltyError) -> None:
    typer.secho(f"error: {error.message}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8000, help="Port to listen on."),
          jobs: bool = typer.Option(True, help="Run background jobs in this process (in every worker)."),
          workers: int = typer.Option(1, min=1, help="Worker processes sharing the port.")) -> None:
    """Run the HTTP API (and, by default, the background jobs)."""
    import os

    import uvicorn

    from loyalty.api.app import create_app
    from loyalty.api.http_protocol import HttpProtocol

    rt = _runtime()
    typer.echo(f"Loyalty Engine on http://{host}:{port}/api/v1.1/ (store: {rt.store.dialect}, "
               f"{workers} worker{'s' if workers > 1 else ''})", err=True)
    if workers == 1:
        uvicorn.run(create_app(rt, run_jobs=jobs), host=host, port=port, log_level="warning", access_log=False,
                    http=HttpProtocol)
        return
    # Each worker builds its own runtime from the environment (connections cannot cross processes). Jobs may
    # run in all of them: every job and export is leased in the store, so each run happens once.
    rt.close()
    os.environ["LOYALTY_RUN_JOBS"] = "true" if jobs else "false"
    uvicorn.run("loyalty.api.app:app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level="warning", access_log=False, http=HttpProtocol)


@app.command()
def worker() -> None:
    """Run only the background jobs (for deployments that separate them from the API)."""
    import time

    from loyalty.jobs.runner import JobRunner

    rt = _runtime()
    runner = JobRunner(rt)
    runner.start()
    typer.echo("worker running; Ctrl-C to stop", err=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        runner.stop()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations."""
    rt = _runtime(check_schema=False)
    before, after = schema.upgrade(rt)
    typer.echo("schema already current" if before == after else f"schema upgraded: {before or 'empty'} -> {after}")


@app.command()
def apply(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
          dry_run: bool = typer.Option(False, "--dry-run", help="Check and show changes without applying.")) -> None:
    """Create or update databases, programs, currencies, promotions and tiers to match a program file."""
    from loyalty.services import programfile

    rt = _runtime()
    try:
        changes = programfile.apply_file(rt, file, dry_run=dry_run)
    except programfile.ProgramFileInvalid as exc:
        typer.secho(f"{file}: refused, nothing was changed:", fg="red", err=True)
        for problem in exc.problems:
            typer.echo(f"  {file}: {problem}", err=True)
        raise typer.Exit(1) from None
    if not changes:
        typer.echo("no changes")
    for change in changes:
        typer.echo(change)


@token_app.command("create")
def token_create(name: str = typer.Option(..., help="Who or what uses the token."),
                 role: list[str] = typer.Option(..., help=f"One of {', '.join(tokens.ROLES)}; repeatable."),
                 program: list[int] = typer.Option(None, help="Limit to this program id; repeatable."),
                 database: list[int] = typer.Option(None, help="Limit to this database id; repeatable."),
                 quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the token.")) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    rt = _runtime()
    try:
        raw, info = tokens.create(rt, name, role, program or None, database or None)
    except LoyaltyError as exc:
        _fail(exc)
        return
    if quiet:
        typer.echo(raw)
        return
    typer.echo(f"token {info.id} ({info.name}, roles {', '.join(info.roles)}) created. It is shown only once:")
    typer.echo(raw)


@token_app.command("list")
def token_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List tokens (never their values)."""
    rt = _runtime()
    infos = tokens.list_tokens(rt)
    if as_json:
        typer.echo(json.dumps([
            {"id": t.id, "name": t.name, "prefix": t.prefix, "roles": t.roles, "programs": t.programs,
             "databases": t.databases, "created_at": t.created_at.isoformat(),
             "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
             "revoked": t.revoked_at is not None} for t in infos], indent=2))
        return
    for t in infos:
        state = "revoked" if t.revoked_at else "active"
        scope = f"programs {t.programs}" if t.programs else "all programs"
        typer.echo(f"{t.id:>4}  {t.prefix}…  {t.name:<20} {','.join(t.roles):<30} {scope:<20} {state}")


@token_app.command("revoke")
def token_revoke(token: str = typer.Argument(..., help="Token id, name or shown prefix.")) -> None:
    """Revoke a token (takes effect within seconds on running servers)."""
    rt = _runtime()
    try:
        info = tokens.revoke(rt, token)
    except LoyaltyError as exc:
        _fail(exc)
        return
    typer.echo(f"token {info.id} ({info.name}) revoked")


@app.command()
def demo(quiet: bool = typer.Option(False, "--quiet", help="Print only the token.")) -> None:
    """Create a demo program with a few members and a token, and print how to call the API."""
    from loyalty.services import demo as demo_service

    rt = _runtime()
    result = demo_service.create_demo(rt)
    if quiet:
        typer.echo(result.token)
        return
    typer.echo(demo_service.instructions(result))


@app.command()
def export(program: int = typer.Option(..., help="Loyalty program id."),
           currency: str = typer.Option(..., help="Points currency iid or eid."),
           date_from: str = typer.Option(..., "--from", help="Start of the period (RFC 3339, inclusive)."),
           date_to: str = typer.Option(..., "--to", help="End of the period (RFC 3339, inclusive)."),
           out: Path = typer.Option(..., help="CSV file to write.")) -> None:
    """Export a currency's transactions in a period to CSV (the same task as loyalty/transactions_export)."""
    from rich.progress import Progress

    from loyalty.services import exports, jobs
    from loyalty.services.commands import ExportCmd
    from loyalty.storage import jobs_repo

    rt = _runtime()
    admin = tokens.Principal(0, "cli", frozenset(tokens.ROLES), None, None)
    selector = {"points_currency_iid": int(currency)} if currency.isdigit() else {"points_currency_eid": currency}
    owner = jobs.new_owner()
    try:
        task_id = exports.create(rt, admin, ExportCmd(loyalty_program_id=program, date_from=date_from,
                                                      date_to=date_to, **selector))
    except LoyaltyError as exc:
        _fail(exc)
        return
    from datetime import timedelta

    task = rt.store.write(lambda conn: jobs_repo.claim_task_by_id(conn, task_id, owner, rt.clock.now(),
                                                                 timedelta(seconds=rt.settings.job_lease_sec)))
    with Progress(transient=False) as bar:
        job = bar.add_task("exporting", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        rows = exports.run_task(rt, task, owner, dest=out, progress=progress)
    typer.echo(f"{rows} transactions written to {out}")


@app.command()
def verify() -> None:
    """Recompute every account from its lots and journal and report any drift (exit 1 on drift)."""
    from loyalty.services import verify as verify_service

    rt = _runtime()
    report = verify_service.verify_all(rt)
    for problem in report.problems:
        typer.secho(problem, fg="red")
    typer.echo(f"checked {report.accounts} accounts: {'OK' if not report.problems else 'DRIFT'}")
    if report.problems:
        raise typer.Exit(1)


@app.command()
def bench(store: list[str] = typer.Option(["sqlite", "postgresql"], help="Stores to benchmark; repeatable."),
          members: int = typer.Option(100_000, help="Members to seed."),
          history: int = typer.Option(1_000_000, help="Transactions in the long history member."),
          seconds: float = typer.Option(10.0, help="Duration of each scenario."),
          expiry_lots: int = typer.Option(1_000_000, min=0,
                                          help="Expired lots for the sweeper to expire (0: skip)."),
          skip_scaling: bool = typer.Option(False, "--skip-scaling",
                                            help="Skip the runs with 1, 2 and 4 server processes."),
          skip_export: bool = typer.Option(False, "--skip-export", help="Skip the transaction export."),
          out: Path = typer.Option(Path("bench/results"), help="Where the JSON results go.")) -> None:
    """Benchmark the server over real HTTP against the raw store ceiling measured in the same run."""
    from loyalty.benchmark.run import main as run_bench

    run_bench(list(store), members, history, seconds, out, expiry_lots=expiry_lots, scaling=not skip_scaling,
              export=not skip_export)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
