"""Separate seeds: the data split, the initialisation and the device draws vary independently, so
a variability sweep changes the devices alone."""

from __future__ import annotations

import torch

from cosim.build import build_model
from cosim.config import parse_config
from cosim.data import load_dataset
from cosim.sweep import Sweep

BLOCK = {"type": "analog", "sizes": [64, 6, 10]}
DEVICES = {"d2d_sigma": 0.1, "diode_is_sigma": 0.2}
"""Spreads that do not change what is programmed (stuck devices would pin it)."""


def _config(seed):
    return parse_config({"seed": seed, "devices": DEVICES, "model": {"blocks": [BLOCK]}})


def _draws(model):
    block = model.analog_blocks()[0]
    return torch.cat([block.arrays[0].factor.flatten(), block.diode_area.flatten()])


def test_one_number_sets_every_seed():
    seed = _config(7).seed
    assert (seed.data, seed.init, seed.devices) == (7, 7, 7)


def test_each_seed_changes_only_what_it_draws():
    base = build_model(_config({"data": 1, "init": 1, "devices": 9}), (64,))
    other_devices = build_model(_config({"data": 1, "init": 1, "devices": 10}), (64,))
    other_init = build_model(_config({"data": 1, "init": 2, "devices": 9}), (64,))
    weights = [p.detach() for p in base.analog_blocks()[0].conductances()]
    assert all(
        torch.equal(a, b.detach())
        for a, b in zip(weights, other_devices.analog_blocks()[0].conductances(), strict=True)
    )
    assert not torch.equal(_draws(base), _draws(other_devices))
    assert torch.equal(_draws(base), _draws(other_init))
    assert not torch.equal(weights[0], other_init.analog_blocks()[0].conductances()[0].detach())
    config = _config({"data": 3, "init": 1, "devices": 9})
    split = load_dataset(config.data, config.seed.data).test_y
    assert torch.equal(split, load_dataset(config.data, _config({"data": 3, "init": 5, "devices": 0}).seed.data).test_y)
    assert not torch.equal(split, load_dataset(config.data, 4).test_y)


def test_sweep_seeds_vary_the_devices_by_default():
    text = '[devices]\nd2d_sigma = 0.1\n[[model.blocks]]\ntype = "analog"\nsizes = [64, 6, 10]\n'
    sweep = Sweep(text, "c.toml", [("devices.d2d_sigma", [0.1, 0.2])], 3, "gradcheck")
    seeds = [p["config"]["seed"] for p in sweep.points]
    assert {(s["data"], s["init"]) for s in seeds} == {(0, 0)}
    assert sorted({s["devices"] for s in seeds}) == [0, 1, 2]
    every = Sweep(text, "c.toml", [("devices.d2d_sigma", [0.1])], 2, "gradcheck", vary="all")
    assert [p["config"]["seed"] for p in every.points] == [0, 1]
    init = Sweep(text, "c.toml", [("seed.init", [4, 5])], 1, "gradcheck", vary="init")
    assert [p["config"]["seed"]["init"] for p in init.points] == [4, 5]
