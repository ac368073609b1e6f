"""Options several commands share, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

Workers = Annotated[
    int | None, typer.Option(help="Run on a local Dask cluster of this many worker processes (on 127.0.0.1).")
]
Scheduler = Annotated[
    str | None, typer.Option(help="Run on a running Dask cluster: its scheduler address, tcp://HOST:PORT.")
]
