"""The README's API walkthrough runs as written and learns."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_walkthrough_runs_and_learns():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    walkthrough = [b for b in blocks if "FFEBM(" in b]
    assert len(walkthrough) == 1, "the README should hold exactly one API walkthrough"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(walkthrough[0], str(README), "exec"), {"__name__": "readme"})
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", out.getvalue()).group(1))
    assert accuracy > 85.0, out.getvalue()
