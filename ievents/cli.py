"""The ``ievents`` command: every process and query of the pipeline behind one entry point."""

from __future__ import annotations

import typer

from ievents.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """Settings come from IEVENTS_* environment variables; defaults run everything on this machine."""


@app.command()
def stream() -> None:
    """Run the Faust stream worker (raw topic -> enriched topic / DLQ) in the foreground."""
    from ievents.stream.app import run_worker

    run_worker(Settings())
