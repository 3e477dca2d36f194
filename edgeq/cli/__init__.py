"""The ``edgeq`` command line: a thin layer over the Python API (edgeq.api) that parses options and prints results.

Every command turns a bad input into one line on stderr and exit status 2 (``--debug`` shows the traceback): the
``EdgeqError`` the API raises, with the same message. Any other failure is a bug, reported as one line and exit
status 3. Commands live in edgeq.cli.build (export, quantize, convert), edgeq.cli.inspect (verify, compare,
profile, report) and edgeq.cli.describe (inspect).
"""

from __future__ import annotations

import os
import sys

import click

from edgeq.errors import EdgeqError, first_line

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


class _Group(click.Group):
    """Turns EdgeqError (and, without --debug, any other failure) into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeqError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"edgeq: error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`edgeq compare ... | head`): nothing left to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(
                f"edgeq: error: {type(exc).__name__}: {first_line(exc)} (run with --debug for details)", err=True
            )
            sys.exit(EXIT_INTERNAL_ERROR)


EXIT_CODES_EPILOG = (
    "Exit status: 0 done; 1 `verify` found a mismatch, or a `sweep` pair failed; 2 bad input (a usage error, "
    "or one line 'edgeq: error: ...' naming the file, option or recipe key at fault; nothing is written); 3 an "
    "internal error (a bug: rerun with --debug and report it)."
)


@click.group(cls=_Group, epilog=EXIT_CODES_EPILOG)
@click.version_option(package_name="edgeq")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgeq: quantize trained models into verified integer artifacts for edge devices."""
    ctx.obj = {"debug": debug}


def echo_json(data) -> None:
    from edgeq.io.files import json_text

    click.echo(json_text(data))


from edgeq.cli import build, describe, inspect, mixed, sweep  # noqa: E402,F401  (the commands register themselves on main)
