"""The error type for user mistakes, and the wrapper every CLI uses to report them in one line."""

from __future__ import annotations

import errno
import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad argument, missing artifact, corrupted file).

    Scripts print its message as one line and exit non-zero instead of showing a traceback.
    The message should say what is wrong, the value given, what is allowed, and, for a missing
    artifact, the command that makes it.
    """


class MissingArtifactError(UserError):
    """An artifact a step needs has not been produced yet."""

    def __init__(self, what: str, path: object, command: str | None = None, advice: str | None = None):
        remedy = f"make it with: {command}" if command else (advice or "")
        super().__init__(f"{what} not found at {path}; {remedy}")
        self.path = path
        self.command = command


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(err: OSError) -> str:
    """One line for a write that ran out of space: which file, and what to do."""
    where = f" while writing {err.filename}" if err.filename else ""
    return (f"no space left on the device{where} ({err.strerror}); free some space or give another --base_dir, "
            f"then rerun: finished artifacts are kept and the partial one was removed")


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a script's main(): UserError -> one line on stderr and exit 2; a full disk -> one line and exit 2;
    Ctrl-C -> exit 130."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            print(f"error: {disk_full_message(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted: finished artifacts are kept, partial ones were not written", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapped
