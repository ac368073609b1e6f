"""One wrapper that turns library errors into a one-line message and exit code 2."""

from __future__ import annotations

import functools

import typer

from madata.errors import MadataError


def handle_errors(fn):
    """Turn madata errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MadataError as e:
            typer.echo(f"madata: error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("madata: interrupted; committed episodes are kept (rerun with --resume to continue)", err=True)
            raise typer.Exit(130) from None

    return wrapper
