"""Prints pyproject.toml's llama-cpp-python requirement, for the image's builder stage.

The builder compiles llama-cpp-python (many minutes) in a layer of its own that depends on this
one line only, so a change to the other dependencies or to the code leaves it cached.

    python3 llama_requirement.py pyproject.toml > llama.txt
"""

import re
import sys
import tomllib
from pathlib import Path

COMPILED = "llama-cpp-python"


def requirement(pyproject: str | Path) -> str:
    """The llama-cpp-python requirement line; raises LookupError when there is none."""
    dependencies = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    for line in dependencies:
        name = re.match(r"[A-Za-z0-9._-]+", line)
        if name and re.sub(r"[-_.]+", "-", name.group(0)).lower() == COMPILED:
            return str(line)
    raise LookupError(f"{pyproject} lists no {COMPILED} dependency")


def main(pyproject: str) -> int:
    try:
        print(requirement(pyproject))
    except LookupError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
