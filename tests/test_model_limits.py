"""Model libraries are bounded before they are read: special files, huge or sparse files, include
bombs and exponentially nested subcircuits are refused at once, in little memory; nonsense values
(unbalanced parentheses, non-positive or non-finite resistors) are refused with the line."""

from __future__ import annotations

import os
import re
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from analog.model_library import MAX_BYTES, MAX_EXPANDED_ELEMENTS, MAX_TOTAL_BYTES, load_model_library
from analog.models import ModelFileError
from cosim.cli import main


def _refused_quickly(path: Path, match: str, seconds: float = 0.5, peak_bytes: int = 2_000_000) -> ModelFileError:
    """Load ``path`` in a thread (a hang fails the test instead of stalling the suite) and check the
    refusal and its time; then again under tracemalloc (which slows Python down) for the peak
    memory of the attempt."""

    def attempt(result: dict, traced: bool) -> None:
        if traced:
            tracemalloc.start()
        start = time.perf_counter()
        try:
            load_model_library(path)
        except ModelFileError as exc:
            result["error"] = exc
        finally:
            result["seconds"] = time.perf_counter() - start
            if traced:
                result["peak"] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()

    timed, traced = {}, {}
    for result, trace in ((timed, False), (traced, True)):
        thread = threading.Thread(target=attempt, args=(result, trace), daemon=True)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive(), f"loading {path} hung"
        assert "error" in result, f"{path} was accepted"
    assert re.search(match, str(timed["error"])), str(timed["error"])
    assert timed["seconds"] < seconds, timed["seconds"]
    assert traced["peak"] < peak_bytes, traced["peak"]
    return timed["error"]


def test_sparse_3_gb_file_is_refused_by_its_size_without_reading(tmp_path):
    big = tmp_path / "vendor.lib"
    with open(big, "wb") as fh:
        fh.truncate(3 * 1024**3)
    error = _refused_quickly(big, rf"{re.escape(str(big))} is {3 * 1024**3} bytes, more than the {MAX_BYTES}")
    assert "keep only the models" in str(error)
    main_lib = tmp_path / "main.lib"
    main_lib.write_text(".include vendor.lib\n")
    _refused_quickly(main_lib, rf"main\.lib:1: .*vendor\.lib is {3 * 1024**3} bytes")


def test_fifo_and_devices_are_refused_at_once(tmp_path):
    fifo = tmp_path / "models.lib"
    os.mkfifo(fifo)
    try:
        _refused_quickly(fifo, r"models\.lib is a FIFO \(named pipe\), not a regular file; give a plain text")
        main_lib = tmp_path / "main.lib"
        main_lib.write_text(".model DX D (IS=1e-14)\n.include models.lib\n")
        _refused_quickly(main_lib, r"main\.lib:2: .*models\.lib is a FIFO")
    finally:
        # Should a reader still block on the FIFO, a writer opening it lets it go.
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    _refused_quickly(Path("/dev/zero"), r"/dev/zero is a character device, not a regular file")
    _refused_quickly(tmp_path, r"is a folder, not a regular file")


def test_fifo_model_file_in_a_config_exits_2(tmp_path, capsys):
    fifo = tmp_path / "models.lib"
    os.mkfifo(fifo)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[model.blocks]]\ntype = "analog"\nsizes = [4, 2]\nmodel_file = "{fifo}"\ndiode_model = "DX"\n',
        encoding="utf-8",
    )
    start = time.perf_counter()
    assert main(["solve", "--config", str(config), "--solver", "fast"]) == 2
    assert time.perf_counter() - start < 1.0
    err = capsys.readouterr().err
    assert "is a FIFO (named pipe), not a regular file" in err and "Traceback" not in err


@pytest.mark.slow
def test_include_bomb_is_refused_by_the_total_size(tmp_path):
    # Every file is small and the include depth is legal, but c.lib is read 10 x 10 times.
    (tmp_path / "c.lib").write_text("* padding\n" * 20_000)
    (tmp_path / "b.lib").write_text(".include c.lib\n" * 10)
    main_lib = tmp_path / "main.lib"
    main_lib.write_text(".include b.lib\n" * 10)
    assert 100 * (tmp_path / "c.lib").stat().st_size > MAX_TOTAL_BYTES
    _refused_quickly(main_lib, rf"b\.lib:\d+: the library with its includes .* exceeds {MAX_TOTAL_BYTES} bytes", 1.0)


def _nested(levels: int, fanout: int) -> str:
    lines = []
    for level in range(levels):
        lines.append(f".subckt S{level} n")
        if level == levels - 1:
            lines.append("R1 n 0 1k")
        else:
            lines += [f"X{i} n S{level + 1}" for i in range(fanout)]
        lines.append(".ends")
    return "\n".join(lines) + "\n"


def test_exponentially_nested_subcircuits_are_refused_before_expansion(tmp_path):
    path = tmp_path / "nested.lib"
    path.write_text(_nested(levels=12, fanout=10))  # S0 would flatten to ~1.1e11 lines
    error = _refused_quickly(path, rf"\.subckt S\d+ flattens to \d+ element lines .* cap of {MAX_EXPANDED_ELEMENTS}")
    where = re.match(r"model file (.*):(\d+): \.subckt (S\d+)", str(error))
    line = path.read_text().splitlines()[int(where.group(2)) - 1]
    assert where.group(1) == str(path) and line == f".subckt {where.group(3)} n"
    assert "nest fewer instances" in str(error)
    # Just under the cap is fine: 10 x 10 x 10 resistors plus the X lines.
    path.write_text(_nested(levels=4, fanout=10))
    library = load_model_library(path)
    assert library.subcircuit("S0") is not None


def test_instantiation_loops_through_other_subcircuits_are_refused(tmp_path):
    path = tmp_path / "loop.lib"
    path.write_text(".subckt A n\nX1 n B\n.ends\n.subckt B n\nR1 n 0 1k\nX1 n C\n.ends\n.subckt C n\nX1 n A\n.ends\n")
    _refused_quickly(
        path, r"loop\.lib:1: subcircuits instantiate themselves through each other \(a loop among A, B, C\)"
    )


@pytest.mark.parametrize(
    "text, line, message",
    [
        (".model DX D (IS=1e-14 N=1\n", 1, r"unbalanced parentheses in the \.model card: 1 '\(' never closed"),
        (".model DX D (IS=1e-14\n+ N=1))\n", 2, r"'\)' without a '\(' before it"),
        (".model DX D IS=1e-14) (N=1\n", 1, r"'\)' without a '\(' before it"),
        (".model DX D (IS=1e-14\n+ N=1\n.subckt Z n\nR1 n 0 1\n.ends\n", 1, r"1 '\(' never closed"),
        (".subckt Z n\nR1 n 0 -1k\n.ends\n", 2, r"R1: resistance -1k ohm is not positive"),
        (".subckt Z n\nR1 n 0 0\n.ends\n", 2, r"R1: resistance 0 ohm is not positive"),
        (".subckt Z n\nR1 n 0 1e-999\n.ends\n", 2, r"R1: resistance 1e-999 ohm is not positive"),
        (".subckt Z n\nRLEAK n 0 1e999\n.ends\n", 2, r"RLEAK value '1e999' is not a finite number"),
        (".model DX D (IS=1e999 N=1)\n", 1, r"IS '1e999' is not a finite number"),
    ],
)
def test_unbalanced_cards_and_bad_values_name_the_line(tmp_path, text, line, message):
    path = tmp_path / "bad.lib"
    path.write_text(text)
    with pytest.raises(ModelFileError, match=rf"^model file {re.escape(str(path))}:{line}: .*{message}"):
        load_model_library(path)


def test_balanced_cards_across_continuations_and_positive_resistors_still_load(tmp_path):
    path = tmp_path / "good.lib"
    path.write_text(".model DX D (IS=1e-14\n+ N=1.05)\n.subckt Z n\nR1 n 0 1.5k\nR2 n 0 {2*1k}\nD1 n 0 DX\n.ends\n")
    library = load_model_library(path)
    assert library.model("DX").params == (("IS", "1e-14"), ("N", "1.05"))
    assert library.subcircuit("Z").body == ("R1 n 0 1.5k", "R2 n 0 {2*1k}", "D1 n 0 DX")
