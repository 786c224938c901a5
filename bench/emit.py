"""The benchmarks' common ending: one JSON line on stdout, and the same result in a file."""
from __future__ import annotations

import json


def emit(result: dict, path: str = "") -> None:
  """Prints `result` as one JSON line; also writes it (indented) to `path` when given."""
  print(json.dumps(result))
  if path:
    with open(path, "w") as f:
      json.dump(result, f, indent=1)
