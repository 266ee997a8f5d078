"""``pec-cutover evidence export|verify`` and ``pec-cutover doctor``: the auditor's bundle and the shell's set-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cutover import evidence
from cutover.cli._common import PlanOption, handle_errors
from cutover.doctor import diagnose
from cutover.errors import CutoverError
from cutover.plan import load_plan
from cutover.prefect_server import client_environment

app = typer.Typer(no_args_is_help=True, help="The evidence bundle an auditor keeps: export it, re-check it.")


@app.command("export")
def export(plan_path: Path = PlanOption, out: Path = typer.Option(..., "--out", help="new directory for the bundle"),
           prefect: bool = typer.Option(True, "--prefect/--no-prefect",
                                        help="include every run's artifacts from Prefect's API (PREFECT_API_URL)")) -> None:
    """Write every run's report and gate decisions, per-mailbox tables, the ledger's per-message proof, the DNS
    evidence and a SHA-256 manifest into OUT."""
    console = Console()
    with handle_errors(console):
        plan = load_plan(plan_path)
        runs: list[evidence.RunRecord] = []
        if prefect:
            os.environ.update(client_environment(plan, base={}))  # the locked server's auth, before Prefect loads
            try:
                runs = evidence.prefect_runs(plan_path)
            except CutoverError:
                raise
            except Exception as exc:  # the API is down or refuses: say so in one line
                raise evidence.EvidenceError(
                    f"cannot read the run history from Prefect ({os.environ.get('PREFECT_API_URL') or 'no PREFECT_API_URL'}): "
                    f"{type(exc).__name__}; start the server or pass --no-prefect (reports_dir still has the reports)") from None
        result = evidence.export(plan, out, runs)
        console.print(f"evidence: {result.files} files ({result.runs} runs, {result.messages} ledger rows) in {out}; "
                      f"manifest {out / evidence.MANIFEST}")


@app.command("verify")
def verify(directory: Path = typer.Argument(..., help="an exported bundle"),
           plan_path: Optional[Path] = typer.Option(None, "--plan", "-p",
                                                    help="with the plan's credentials, sample messages on the target"),
           sample: int = typer.Option(20, help="messages to sample on the target (with --plan)")) -> None:
    """Re-check the manifest (every file's SHA-256, nothing missing or added); with --plan, also fetch a sample of
    recorded messages from the target and compare their SHA-256 with the ledger's."""
    console = Console()
    with handle_errors(console):
        result = evidence.verify(directory)
        if plan_path is not None:
            evidence.sample_target(load_plan(plan_path), directory, result, sample=sample)
        for problem in result.problems:
            console.print(f"[red]✗[/red] {escape(problem)}", soft_wrap=True)
        sampled = f", {result.sampled} messages sampled on the target" if plan_path is not None else ""
        if not result.ok:
            console.print(f"[red]evidence: {result.files} files, {len(result.problems)} problem(s){sampled}[/red]")
            raise typer.Exit(1)
        console.print(f"evidence: {result.files} files, manifest verified{sampled}")


def doctor(plan_path: Path = PlanOption) -> None:
    """Which Prefect server, plan, ledger and freeze marker this shell would use, and whether each is reachable."""
    console = Console()
    with handle_errors(console):
        findings = diagnose(plan_path)
        for f in findings:
            mark = "[green]ok[/green]" if f.ok else "[red]NO[/red]"
            console.print(f"{mark}  {f.what}: {escape(f.value)}" + (f" — {escape(f.detail)}" if f.detail else ""),
                          soft_wrap=True)
        bad = [f for f in findings if not f.ok]
        if bad:
            console.print(f"[red]{len(bad)} problem(s): {', '.join(f.what for f in bad)}[/red]")
            raise typer.Exit(1)
        console.print("[green]this shell is set up for the day[/green]")
