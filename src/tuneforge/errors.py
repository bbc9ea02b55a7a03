"""The one base of errors a user can fix.

`tuneforge` prints a `TuneforgeError` as one line naming the file, row, key or value at fault and exits 2;
anything else is a bug in tuneforge or a library and shows its traceback (exit 1). Each package keeps its own
subclass (DataError, ConfigError, ...) so a caller can catch one concern; the subclasses also derive from the
built-in they used to be (ValueError, FileExistsError) so `except ValueError` around a library call keeps working.
"""

from __future__ import annotations


class TuneforgeError(Exception):
    """An error in the user's input or environment: the message says what is wrong and where."""


def unreadable_text(path: object, error: UnicodeDecodeError) -> TuneforgeError:
    """A file that is not UTF-8 text, named: `'utf-8' codec can't decode byte 0xff` alone names no file."""
    return TuneforgeError(
        f"{path}: not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset {error.start}); "
        "is it a binary file? Save text data as UTF-8."
    )
