"""``python -m invdiff.bench SUITE ...``: the ``bench`` command in a process of its own (what torchrun starts, one
per GPU; each takes its share of the images)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from ..accel import keep_freed_memory
    from ..cli import app

    keep_freed_memory()  # a benchmark process owns its memory (see invdiff.accel)
    app(["bench", *(sys.argv[1:] if argv is None else argv)], prog_name="invdiff")


if __name__ == "__main__":
    main()
