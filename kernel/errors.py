"""One-line errors for the user: bad input is reported as `error: <problem>; <fix>`, never a traceback; Ctrl-C
as `interrupted: <where it stopped>; <what a rerun does>`, exit status 130 (a shell's for SIGINT)."""
import signal
import sys
import threading
from typing import Callable


INTERRUPTED = 130  # 128 + SIGINT


class UserError(Exception):
    """A problem with the user's input or setup. Its message names the problem and the fix."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, caught where it is known what was saved: its message says where it stopped and what a rerun
    does."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name if it has none), for a one-line error:
    libraries' messages run to pages. Cut to `limit` characters at a word's end, never inside a word."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if limit is None or len(line) <= limit: return line
    return line[:limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


def _heard_once(signum, frame) -> None:
    """Ctrl-C's handler while `cli` runs: a KeyboardInterrupt, and every later SIGINT ignored from now on.
    A member hears Jupyter's interrupt (its process group's) and then the ensemble's own (kernel/ensemble.py,
    for a parent interrupted alone): the second, arriving while the first unwinds, would break into the
    unwinding (a DataLoader's shutdown, a thread's) with a traceback of its own. Ignored by a handler that
    does nothing, not SIG_IGN, which a member's process started meanwhile would inherit and keep."""
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    raise KeyboardInterrupt


def cli(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run `main(argv)`; a UserError becomes one line on stderr and exit status 2, Ctrl-C one line and 130.
    Every output is written whole or not at all (kernel/atomic.py): stopped anywhere, nothing is left
    half-written."""
    # Python's own handler only (not one a caller or an asyncio loop set), and only in the main thread
    own = threading.current_thread() is threading.main_thread() \
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if own: signal.signal(signal.SIGINT, _heard_once)
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        # heard once, whatever raised it (in the dry run, asyncio's handler): a second Ctrl-C must not break into
        # the shutdown that follows with a traceback of its own (SIG_IGN: nothing is started from here on)
        if threading.current_thread() is threading.main_thread(): signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"interrupted: {e or 'stopped, nothing left half-written: rerun the same command'}",
              file=sys.stderr)
        sys.exit(INTERRUPTED)
    finally:  # not interrupted: Python's handler back (interrupted, SIGINT stays ignored through the exit)
        if own and signal.getsignal(signal.SIGINT) is _heard_once:
            signal.signal(signal.SIGINT, signal.default_int_handler)
