"""Sweep figures for a design review: a file per varied key, none for a key with one value."""

from __future__ import annotations

from cosim.plots import _axis_label, _null_label, plot_sweep


def _rows():
    rows = []
    for bits in (6, 8, None):
        for spread in (0.0, 0.1):
            for seed in range(2):
                values = {"measurement.bits": bits, "devices.d2d_sigma": spread, "io.read_noise_sigma": 0.0}
                cosine = (1.0 if bits is None else 1 - 2.0 ** (4 - bits)) - spread + 0.01 * seed
                rows.append({"values": values, "seed": seed, "metrics": {"cosine": cosine, "wall_s": 1.0}})
    return rows


def test_sweep_plots_one_file_per_varied_key(tmp_path):
    keys = ["measurement.bits", "devices.d2d_sigma", "io.read_noise_sigma"]
    paths = plot_sweep(_rows(), keys, tmp_path)
    assert [p.name for p in paths] == [
        "sweep_measurement.bits.png",
        "sweep_devices.d2d_sigma.png",
        "heatmap_cosine.png",
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not (tmp_path / "sweep_io.read_noise_sigma.png").exists()
    assert plot_sweep([], keys, tmp_path / "none") == []


def test_axis_labels_carry_units_and_null_says_what_it_means():
    assert _axis_label("model.blocks[0].wire_ohm") == "model.blocks[0].wire_ohm (Ohm)"
    assert _axis_label("model.blocks[0].temperature_C") == "model.blocks[0].temperature_C (C)"
    assert _axis_label("devices.levels") == "devices.levels"
    assert (_null_label("measurement.bits"), _null_label("model.blocks[0].wire_ohm")) == ("exact", "ideal wires")
