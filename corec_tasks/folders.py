"""The one way CoreC makes a folder it is about to write in: created on first use, by
whichever process gets there first, owner-only.

Why here and not in each writer: beat, a worker, the CLI and the API each write under
the data folder (``COREC_DATA_DIR``, ``.corec`` by default: beat's schedule, the grant
and stream keys, the embedded servers' passwords, logs), and any of them may be the
first to run on a fresh machine. One that assumed another had made the folder died at
start (beat with ``FileNotFoundError`` for its schedule file, issue 18).

Why 0700: the folder holds keys and passwords (each file 0600); a folder only its
owner can list keeps even their names private. Folders that already exist are left as
they are (a mounted volume, an operator's choice, ``/tmp``): only what this creates
gets the mode, each missing level of the path alike (``mkdir -p`` would leave the
parents world-readable).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: The mode of every folder CoreC creates (README, "The data folder").
PRIVATE_DIR = 0o700


def ensure_dir(path: Path | str, mode: int = PRIVATE_DIR) -> Path:
    """``path`` as a folder: made with ``mode``, and its missing parents too, if absent.

    Safe when processes race to make it (the loser finds it made). Raises
    ``NotADirectoryError`` if something that is not a folder is in the way.
    """
    path = Path(path)
    missing: list[Path] = []
    level = path
    while True:
        try:
            found = level.stat()  # one look: another process may be making it right now
        except (FileNotFoundError, NotADirectoryError):  # missing, or a file above it
            if level.is_symlink():  # a link to nowhere: mkdir would fail on it
                raise NotADirectoryError(f"{level} is in the way of folder {path}: "
                                         "a dangling link") from None  # fmt: skip
        else:
            if stat.S_ISDIR(found.st_mode):
                break
            raise NotADirectoryError(f"{level} is in the way of folder {path}: not a folder")
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:  # another process made it first: theirs stands
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is in the way of folder {path}: "
                                         "not a folder") from None  # fmt: skip
            continue
        os.chmod(folder, mode)  # exactly ``mode``, whatever the umask took away
    return path
