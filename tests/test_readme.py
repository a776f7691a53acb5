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


def test_readme_defaults_table_is_the_librarys():
    """Every default the README's table states is the value a configuration gets."""
    from cosim.config import parse_config

    text = README.read_text(encoding="utf-8")
    section = text.split("### Defaults of the circuit and the energy model", 1)[1].split("\n### ", 1)[0]
    config = parse_config({"model": {"blocks": [{"type": "analog", "sizes": [4, 2]}]}})
    block = config.model.blocks[0]
    checked = 0
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        keys = [k.strip(" `") for k in cells[0].split("/")]
        values = [v.strip(" `") for v in cells[1].split("/")]
        for key, value in zip(keys, values, strict=True):
            section_name, _, leaf = key.rpartition(".")
            owner = getattr(config, section_name) if section_name else block
            actual = getattr(owner, leaf)
            expected = None if value == "none" else {"true": True, "false": False}.get(value, None)
            if expected is None and value != "none":
                expected = float(value)
            assert actual == expected, f"{key}: README says {value}, the library {actual}"
            checked += 1
    assert checked >= 20
