"""Train and evaluate a model: the same program as the `cmjax` console script (see cmjax/cli.py
and `python launch.py --help`).

  python launch.py --config digits_ect --workdir runs/digits_ect
  python launch.py --config configs/digits_ect.py:smoke --workdir /tmp/smoke
"""
from __future__ import annotations

import sys

from cmjax.cli import main

if __name__ == "__main__":
  sys.exit(main(sys.argv))
