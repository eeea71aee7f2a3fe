"""The indicators of a build other than the held-out ones, space-separated, in the manifest's order:

    python scripts/other_indicators.py BUILD [HELD_OUT...]

What scripts/paper.sh trains its transfer run on and scripts/warmstart_demo.sh its warm start on, so
that a held-out indicator stays unseen by both."""

import json
import sys
from pathlib import Path

build, held = Path(sys.argv[1]), set(sys.argv[2:])
print(" ".join(i for i in json.loads((build / "manifest.json").read_text())["indicators"] if i not in held))
