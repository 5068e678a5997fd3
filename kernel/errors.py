"""One-line errors for the user: bad input is reported as `error: <problem>; <fix>`, never a traceback."""
import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input or setup. Its message names the problem and the fix."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name if it has none), for a one-line error:
    libraries' messages run to pages. Cut to `limit` characters at a word's end, never inside a word."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if limit is None or len(line) <= limit: return line
    return line[:limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


def cli(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run `main(argv)`; a UserError becomes one line on stderr and exit status 2."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
