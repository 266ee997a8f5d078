"""The rehearsal (``make rehearsal``): bring the sandbox up, seed it, and show that every server answers.

Later phases (readiness, pre-stage, the cutover day with GO, a NO-GO with rollback) are added as they land.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

REHEARSAL_PLAN = Path("inventory/rehearsal/plan.yaml")


def main(argv: list[str] | None = None) -> int:
    console = Console()
    from cutover.cli import app

    started = time.monotonic()
    for args in (["plan", "check", str(REHEARSAL_PLAN)], ["sandbox", "up", "--plan", str(REHEARSAL_PLAN)],
                 ["sandbox", "seed", "--plan", str(REHEARSAL_PLAN)], ["sandbox", "status", "--plan", str(REHEARSAL_PLAN)]):
        console.rule(" ".join(["pec-cutover", *args]))
        try:
            app(args, standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                return int(exc.code)
    console.print(f"rehearsal done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
