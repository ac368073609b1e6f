"""One wrapper that turns library errors into a one-line message and exit code 2, and the
entry point that does the same for the command line's own usage errors."""

from __future__ import annotations

import functools
import sys

import typer

from madata.errors import MadataError

try:  # typer >= 0.24 runs on a vendored copy of click: its exceptions are that copy's
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_exceptions

NOTHING_PARTIAL = "outputs are written atomically, so nothing partial was left"


def handle_errors(fn=None, *, interrupted: str = NOTHING_PARTIAL):
    """Turn madata errors into one line on stderr and exit code 2; Ctrl-C into one line saying
    what was kept (``interrupted``) and exit code 130."""
    if fn is None:
        return functools.partial(handle_errors, interrupted=interrupted)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MadataError as e:
            typer.echo(f"madata: error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo(f"madata: interrupted; {interrupted}", err=True)
            raise typer.Exit(130) from None

    return wrapper


def run(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the command line and return its exit code. Usage errors (an unknown option, a value that
    does not parse, a missing argument) are one line on stderr and exit code 2, like madata's own errors."""
    try:
        code = app(args=args, prog_name="madata", standalone_mode=False)
    except click_exceptions.UsageError as e:
        where = f"`{e.ctx.command_path} --help`" if e.ctx is not None else "`madata --help`"
        typer.echo(f"madata: error: {e.format_message()} (see {where})", err=True)
        return 2
    except typer.Abort:  # typer's own classes: its vendored click has no Abort or Exit of its own
        typer.echo("madata: interrupted", err=True)
        return 130
    except typer.Exit as e:
        return e.exit_code
    return code if isinstance(code, int) else 0


def main_with(app: typer.Typer) -> None:
    sys.exit(run(app))
