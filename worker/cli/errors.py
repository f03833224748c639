"""What the `routeq` command prints when it cannot go on: one line naming what is wrong, no traceback.

Invalid settings name their environment variable; Redis that cannot be reached or refuses the password
names host:port and what was tried; a closed output pipe (``routeq results B | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from pydantic import ValidationError
from redis.exceptions import RedisError

from jobs.connections import NoRedisConfigured, RedisUnavailable, explain_redis_error
from jobs.settings import Settings, explain_settings_error

# Exit codes: 1 = the command ran and found a problem (unknown batch, rejected lines); 2 = it could not run.
EXIT_CANNOT_RUN = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user-facing refusal: ``routeq <command>: <message>`` on stderr, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_CANNOT_RUN) -> None:
        super().__init__(message)
        self.code = code


def _redis_url() -> str:
    try:
        return Settings().redis_url or ""
    except ValidationError:
        return ""


def _quiet_stdout() -> None:
    # Python flushes stdout again at exit; pointing it at /dev/null keeps that flush from failing loudly.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    prog = f"routeq {args.command}"
    try:
        return func(args)
    except CliError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.code
    except ValidationError as e:
        if e.title != Settings.__name__:
            raise
        for line in explain_settings_error(e).splitlines():
            print(f"{prog}: {line}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except (NoRedisConfigured, RedisUnavailable) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except (RedisError, ConnectionRefusedError) as e:
        print(f"{prog}: {explain_redis_error(_redis_url(), e)}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
