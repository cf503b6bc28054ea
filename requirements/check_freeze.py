"""Compare what a venv holds with a lock: ``python check_freeze.py LOCK``.

Exit 1, naming each difference, when the running interpreter's environment holds a
package the lock does not pin, lacks one it pins, or holds another version; CoreC itself
(installed editable from the tree) is left out. ``make install`` runs it, so a venv that
drifted from the lock fails loudly instead of passing on versions nobody chose.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
SELF = "corec-tasks"


def canonical(name: str) -> str:
    """PEP 503's normalised name: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of a pip-compile lock."""
    out: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if m := PIN.match(line):
            out[canonical(m.group(1))] = m.group(2)
    return out


def installed() -> dict[str, str]:
    """``name -> version`` of every distribution this interpreter sees, CoreC excepted."""
    found = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    found.pop(SELF, None)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_freeze.py LOCK", file=sys.stderr)
        return 2
    want, have = pins(Path(argv[0])), installed()
    problems = [f"{n}=={v} is installed but not in the lock" for n, v in sorted(have.items())
                if n not in want]  # fmt: skip
    problems += [f"{n}=={v} is locked but not installed" for n, v in sorted(want.items())
                 if n not in have]  # fmt: skip
    problems += [f"{n}: {have[n]} installed, {v} locked" for n, v in sorted(want.items())
                 if n in have and have[n] != v]  # fmt: skip
    for p in problems:
        print(f"{argv[0]}: {p}", file=sys.stderr)
    if not problems:
        print(f"{argv[0]}: the venv holds exactly the {len(want)} locked packages")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
