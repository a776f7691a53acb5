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


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_training_figures_have_integer_epochs_and_name_the_solver(tmp_path, monkeypatch):
    import matplotlib.figure

    from cosim.plots import plot_curves, plot_solver_iterations

    rows = [
        {
            "epoch": e,
            "loss": 1.0 / e,
            "train_accuracy": 0.5 + 0.1 * e,
            "test_accuracy": 0.5 + 0.09 * e,
            "analog0.free.iterations_mean": 3.0,
            "analog0.positive.iterations_mean": 2.0,
            "analog0.negative.iterations_mean": 2.0,
        }
        for e in (1, 2, 3)
    ]
    seen = {}
    save = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        seen.setdefault("figs", []).append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    plot_curves(rows, tmp_path / "curves.png")
    plot_solver_iterations(rows, tmp_path / "solver.png", solver="fast")
    assert _png(tmp_path / "curves.png") and _png(tmp_path / "solver.png")
    for fig in seen["figs"]:
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
            assert ticks and all(float(t).is_integer() for t in ticks)
    solver_ax = seen["figs"][1].axes[0]
    assert solver_ax.get_ylabel().startswith("fast solver iterations")
    styles = {line.get_label(): line.get_linestyle() for line in solver_ax.lines}
    assert styles == {"analog0 free": "-", "analog0 +beta": "--", "analog0 -beta": ":"}


def test_energy_figures_render_without_ngspice(tmp_path):
    import torch

    from analog import Circuit, CircuitSpec
    from analog.settling import Capacitances, TransientOptions
    from cosim.energy import simulate_block
    from cosim.plots import plot_breakdown, plot_convergence, plot_waveforms

    spec = CircuitSpec((4, 6, 3), input_gain_V=3.0)
    circuit = Circuit.random(spec, 0)
    source_V = spec.source_voltages(torch.rand(2, 4, generator=torch.Generator().manual_seed(0)))
    nudge = 1e-6 * torch.ones(2, 3)
    phases = [("free", None), ("+beta", nudge), ("-beta", -nudge)]
    results = simulate_block(circuit, source_V, phases, Capacitances(), TransientOptions())
    details = {"analog0": results}
    plot_waveforms(details, tmp_path / "waves.png")
    plot_convergence(details, tmp_path / "convergence.png")
    rows = [r.row(hold_s=1e-8, peripheral_W=0.0) for r in results]
    parts = {
        "analog_J": 1e-12,
        "peripherals_J": 0.0,
        "input_lines_J": 1e-14,
        "dac_J": 1e-11,
        "adc_J": 2e-12,
        "digital_J": 0.0,
        "programming_J": 0.0,
    }
    report = {
        "name": "tiny",
        "method": "ep-centered",
        "beta": 0.1,
        "blocks": [{"name": "analog0", "phases": rows}],
        "per_inference_J": {**parts, "total_J": sum(parts.values())},
        "per_training_sample_J": {**parts, "ep_update_J": 1e-9, "total_J": sum(parts.values()) + 1e-9},
        "assumptions": ["hold 10 ns", "programming: not counted"],
    }
    plot_breakdown(report, tmp_path / "breakdown.png")
    for name in ("waves", "convergence", "breakdown"):
        assert _png(tmp_path / f"{name}.png"), name
    # Without ngspice the convergence figure has its one panel, not an empty second one.
    width = int.from_bytes((tmp_path / "convergence.png").read_bytes()[16:20], "big")
    assert width == 6 * 110
    assert rows[0]["phase_duration_s"] == rows[0]["settle_time_max_s"] + 1e-8
    assert rows[1]["energy_J"] > rows[1]["transient_energy_J"]  # the hold costs static power
