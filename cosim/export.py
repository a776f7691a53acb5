"""``cosim netlist``: every analog block of a trained checkpoint as a self-contained SPICE netlist.

Each ``analog{k}.cir`` holds the block's trained conductances (as its devices present them), its
device models (the built-in diode card or the user's validated models), its bias and rail sources,
its input sources and its nudging current sources, the last two driven by ``.param`` values, the
solver options and an ``.op`` analysis: ``ngspice -b -r out.raw analog0.cir`` runs it unmodified.
``README.md`` lists the nodes, sources and parameters. With ``--sample N`` the input parameters are
test sample ``N``'s source voltages as the model computes them (digital blocks included); without,
they are 0 V.

Conv analog blocks (``analog-conv{k}.cir``) are exported as their unrolled crossbar
(:func:`analog.conv_netlist.build_conv_export`): one resistor per kernel tap and position, the
inverting stages of the ``-`` rails, inputs as ``+/-`` pairs, outputs channel-major.

The checkpoint is the one ``cosim train`` writes (:mod:`cosim.checkpoint`).
Everything is checked before the first file is written; every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from analog.circuit import Circuit, node_name
from analog.conv_circuit import ConvCircuit
from analog.conv_netlist import build_conv_export, conv_resistors
from analog.netlist import build_export, netlist_text
from analog.solvers import FastSolver
from cosim.block import AnalogBlock
from cosim.build import analog_block, build_model, conv_block
from cosim.checkpoint import read_checkpoint
from cosim.config import ConfigError, RunConfig
from cosim.conv_block import ConvAnalogBlock
from cosim.data import load_dataset
from cosim.io import atomic_write_text, check_output_dir

__all__ = ["export_netlists"]


def _blocks(
    config: RunConfig, model: dict[str, torch.Tensor], source: str
) -> list[tuple[int, AnalogBlock | ConvAnalogBlock]]:
    """``(index in model.blocks, block)`` of every analog block (dense and conv), with the
    checkpoint's state."""
    out = []
    n_dense = n_conv = 0
    for i, block_config in enumerate(config.model.blocks):
        if block_config.type == "analog-conv":
            block = conv_block(config, i, FastSolver(), name=f"analog-conv{n_conv}")
            n_conv += 1
        elif block_config.type == "analog":
            # The device draws come from the checkpoint (buffers), not from a seed.
            block = analog_block(config, i, name=f"analog{n_dense}")
            n_dense += 1
        else:
            continue
        prefix = f"blocks.{i}."
        state = {k[len(prefix) :]: v.to(torch.float64) for k, v in model.items() if k.startswith(prefix)}
        try:
            block.load_state_dict(state)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ConfigError(
                f"--checkpoint: {source}: {block.name} (model.blocks[{i}]) does not match the configuration: {detail}"
            ) from None
        out.append((i, block.to(torch.float64)))
    return out


def _sample_inputs(config: RunConfig, model: dict, blocks, sample: int) -> list[torch.Tensor]:
    """Source voltages ``[n_sources]`` of every analog block for test sample ``sample``."""
    data = load_dataset(config.data, config.seed.data)
    if not 0 <= sample < len(data.test_y):
        raise ConfigError(f"--sample: must be in [0, {len(data.test_y) - 1}] (test samples), got {sample}")
    full = build_model(config, data.input_shape, solver=FastSolver()).to(torch.float64)
    full.load_state_dict({k: v.to(torch.float64) if v.is_floating_point() else v for k, v in model.items()})
    captured = []
    hooks = [
        block.register_forward_pre_hook(lambda m, args: captured.append(m.spec.source_voltages(args[0].flatten(1))[0]))
        for block in full.blocks
        if isinstance(block, AnalogBlock | ConvAnalogBlock)
    ]
    try:
        with torch.no_grad():
            full(data.test_x[sample : sample + 1].to(torch.float64))
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _shape(circuit: Circuit | ConvCircuit) -> tuple[str, int]:
    """The layer sizes as the README shows them (``C x H x W`` per layer for a conv block) and the
    deck's resistor count."""
    spec = circuit.spec
    if isinstance(circuit, ConvCircuit):
        h, w = spec.side
        return "-".join(f"{c}x{h}x{w}" for c in spec.channels), conv_resistors(spec)
    return "-".join(map(str, spec.layer_sizes)), spec.n_devices()


def _readme(
    config: RunConfig, entries: list[tuple[str, Circuit | ConvCircuit, int]], sample: int | None, checkpoint: str
) -> str:
    lines = [
        f"# SPICE netlists of `{config.name}`",
        "",
        f"Exported by `cosim netlist` from `{checkpoint}`. Each file is one analog block, self-contained:",
        "run it with `ngspice -b -r out.raw FILE.cir` (add `SPICE_ASCIIRAWFILE=1` for a text raw file).",
        "",
        "Input voltages are `.param vin{k}` and nudging currents (into the output nodes, amperes) are",
        "`.param inudge{j}`: edit these lines to change them. "
        + (f"They hold test sample {sample}'s values now." if sample is not None else "They are 0 now."),
        "",
        "| file | layer sizes | input sources | outputs | resistors |",
        "|---|---|---|---|---|",
    ]
    for file, circuit, index in entries:
        spec = circuit.spec
        sizes, resistors = _shape(circuit)
        outputs = f"`{node_name(spec.depth, 0)}`..`{node_name(spec.depth, spec.n_outputs - 1)}`"
        lines.append(
            f"| `{file}` (model.blocks[{index}]) | {sizes} | `VIN0`..`VIN{spec.n_sources - 1}` | {outputs} | "
            f"{resistors} |"
        )
    lines += [
        "",
        "## Names",
        "",
        "- `L{l}_N{j}`: node `j` of layer `l` (layer 0: input source nodes; the last layer: outputs).",
        "- `VIN{k}`: input source `k` (value `{vin{k}}`); with input pairs, sources `n_in..2 n_in-1`",
        "  carry the negated inputs. ngspice reports a source's branch current with the opposite sign",
        "  of the current it delivers into the network.",
        "- `INUDGE{j}`: current into output node `j` (value `{inudge{j}}`), 0 A in the free phase.",
        "- `VB{l}P` / `VB{l}N`: bias sources feeding layer `l+1`; `RAIL_UP` / `RAIL_DN`: diode rails.",
        "- `RW{l}_{i}_{j}`: weight resistor between node `i` of layer `l` and node `j` of layer `l+1`;",
        "  `RB{l}_{p}_{j}`: bias resistor from the `+` (`p=0`) or `-` (`p=1`) bias source.",
        "- `DUP_*` / `DDN_*`: neuron diodes; `XNRN_*`: a user neuron subcircuit; `EAMP_*`, `VSENSE_*`,",
        "  `FAMP_*`: bidirectional amplifiers; `EINV_*`, `VISENSE_*` / `VSENSE_*` (conv), `FINV_*`: the",
        "  inverting stages that drive the `-` rails of a dual-rail hidden node.",
    ]
    if any(isinstance(circuit, ConvCircuit) for _, circuit, _ in entries):
        lines += [
            "",
            "## Conv blocks",
            "",
            "A conv block's deck is its unrolled crossbar. Node `L{l}_N{n}` is channel `c`, row `y`, column",
            "`x` with `n = c H W + y W + x`; `VIN{k}` for `k < C_0 H W` drive `+inputs`, the others `-inputs`.",
            "`RW{l}_{c}_{r}_{i}_{j}_{y}_{x}` is kernel tap `(i, j)` from row channel `r` (the `+` rails, then",
            "the `-` rails) into node `(c, y, x)` of layer `l+1`: every position holds its own resistor,",
            "programmed to the tap's one trained conductance ('same' padding, fewer devices at the border).",
        ]
    ideal = (
        config.block_section(i, "devices").ideal and config.block_section(i, "io").ideal
        for _, circuit, i in entries
        if not isinstance(circuit, ConvCircuit)  # conv blocks model ideal devices only
    )
    if not all(ideal):
        lines += [
            "",
            "Device nonidealities are frozen in: resistors hold the conductances the devices present",
            "(spread, stuck devices; one draw of read noise if it is enabled).",
        ]
    return "\n".join(lines) + "\n"


def export_netlists(checkpoint: str | Path, out: str | Path, sample: int | None = None) -> list[Path]:
    """Write ``analog{k}.cir`` per dense analog block, ``analog-conv{k}.cir`` per conv one and
    ``README.md`` into ``out``; returns the paths."""
    out = check_output_dir(out, "--out")
    stored = read_checkpoint(checkpoint)
    config, model = stored.config, stored.model
    blocks = _blocks(config, model, str(checkpoint))
    inputs = _sample_inputs(config, model, blocks, sample) if sample is not None else None
    texts, entries = {}, []
    for k, (index, block) in enumerate(blocks):
        try:
            circuit = block.circuit()
        except ValueError as exc:
            raise ConfigError(f"--checkpoint: {checkpoint}: {block.name}: {exc}") from None
        source_V = inputs[k] if inputs is not None else torch.zeros(circuit.spec.n_sources, dtype=torch.float64)
        file = f"{block.name}.cir"
        build = build_conv_export if isinstance(circuit, ConvCircuit) else build_export
        texts[file] = netlist_text(build(circuit, source_V))
        entries.append((file, circuit, index))
    texts["README.md"] = _readme(config, entries, sample, str(checkpoint))
    written = []
    for name, text in texts.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    return written
