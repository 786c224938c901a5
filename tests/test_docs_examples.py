"""Every ```python block of README.md and docs/*.md runs as written (the functional API
walk-through is a promise to users), each in a fresh namespace. A block right after the line
`<!-- test: slow -->` (it trains) is left out of the fast tier."""
import glob
import os
import re

import pytest

from conftest import ROOT

_BLOCK = re.compile(r"(<!-- test: slow -->\n)?```python\n(.*?)```", re.S)


def _blocks():
  out = []
  for path in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
    for i, (slow, code) in enumerate(_BLOCK.findall(open(path).read())):
      out.append(pytest.param(code, id=f"{os.path.relpath(path, ROOT)}#{i}",
                              marks=[pytest.mark.slow] if slow else []))
  return out


def test_there_are_examples():
  assert len(_blocks()) >= 3


@pytest.mark.parametrize("code", _blocks())
def test_example_runs(code):
  exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})
