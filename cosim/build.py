"""From a validated :class:`~cosim.config.RunConfig` to the library's objects: the torch device and
dtype, solvers, circuit specs, the ff-EBM model, its optimizer and learning-rate schedule."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from analog.devices import DeviceConfig, IOConfig
from analog.readout import Measurement
from analog.solvers import EquilibriumSolver, SolverError, get_solver
from analog.solvers.conv_layerwise import ConvLayerwiseSolver
from analog.solvers.conv_ngspice import ConvNgspiceSolver
from cosim.block import AnalogBlock
from cosim.config import ConfigError, RunConfig, SolverConfig, TrainConfig
from cosim.conv_block import ConvAnalogBlock, conv_solver_for
from cosim.gradients import EquilibriumPropagation, GradientMethod
from cosim.hopfield import HopfieldBlock
from cosim.limits import check_memory
from cosim.model import FFEBM
from cosim.optim import analog_scale, build_optimizer, build_schedule
from digital.blocks import Gain, Reshape
from digital.converters import Converter

__all__ = [
    "analog_block",
    "block_method",
    "block_seed",
    "build_conv_solver",
    "build_model",
    "build_solver",
    "conv_block",
    "make_optimizer",
    "make_schedule",
    "resolve_device",
    "torch_dtype",
]


def torch_dtype(config: RunConfig) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[config.dtype]


def block_seed(seed: int, index: int) -> int:
    """Seed of the initial conductances and device draws of ``model.blocks[index]``. Only a new
    model uses it: a checkpoint holds the draws themselves."""
    return seed * 1000 + index


def _device_seed(config: RunConfig, index: int) -> int | None:
    """The devices' own seed when it differs from the initialisation's (equal seeds keep one
    stream, so results of earlier versions reproduce)."""
    if config.seed.devices == config.seed.init:
        return None
    return block_seed(config.seed.devices, index)


def resolve_device(name: str) -> torch.device:
    """A torch device for ``cpu`` / ``cuda`` / ``cuda:N``; a CUDA device must be present."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: {name!r} is not a device; use 'cpu' or 'cuda' (or 'cuda:N')") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: {name!r} is not supported; use 'cpu' or 'cuda' (or 'cuda:N')")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {name!r} was asked for but torch finds no CUDA GPU (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'none'}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def build_solver(config: SolverConfig, name: str | None = None) -> EquilibriumSolver:
    name = name or config.name
    if name == "auto":
        return get_solver(
            "auto",
            tol_V=config.tol_V,
            max_iterations=config.max_iterations,
            fuse=config.fuse,
            compiled=config.compiled,
        )
    if name == "fast":
        return get_solver("fast", tol_V=config.tol_V, max_iterations=config.max_iterations)
    if name == "fast-layerwise":
        return get_solver("fast-layerwise", tol_V=config.tol_V, fuse=config.fuse, compiled=config.compiled)
    return get_solver("ngspice", workers=config.workers, timeout_s=config.timeout_s)


def build_conv_solver(config: SolverConfig, name: str | None = None) -> EquilibriumSolver:
    """The solver of a conv analog block for solver ``name`` (default ``config.name``): the
    layer-wise conv solver for ``auto``, ``fast`` and ``fast-layerwise``, else ngspice's."""
    if (name or config.name) == "ngspice":
        return ConvNgspiceSolver(workers=config.workers, timeout_s=config.timeout_s)
    return ConvLayerwiseSolver(tol_V=config.tol_V)


def analog_block(config: RunConfig, index: int, **options) -> AnalogBlock:
    """The :class:`AnalogBlock` of ``model.blocks[index]`` with its own device, read and
    measurement settings; ``options`` go to :class:`AnalogBlock` (solver, method, seed, dtype, name)."""
    block = config.model.blocks[index]
    try:
        spec = block.circuit_spec()
    except ValueError as exc:  # the model library changed on disk since the configuration was read
        raise ConfigError(f"model.blocks[{index}]: {exc}") from None
    return AnalogBlock(
        spec, devices=config.block_section(index, "devices"), io=config.block_section(index, "io"), **options
    )


def conv_block(config: RunConfig, index: int, solver: EquilibriumSolver, **options) -> ConvAnalogBlock:
    """The :class:`ConvAnalogBlock` of ``model.blocks[index]``: ideal devices and readout, the
    layer-wise conv solver, or with an ngspice ``solver`` (the model's) the conv block's ngspice
    decks in that solver's worker pool (:func:`~cosim.conv_block.conv_solver_for`)."""
    where = f"model.blocks[{index}] (analog-conv)"
    for section, ideal in (("devices", DeviceConfig()), ("io", IOConfig()), ("measurement", Measurement())):
        if getattr(config, section) != ideal:
            raise ConfigError(
                f"{section}: conv analog blocks model ideal devices and exact readings; drop the [{section}] keys "
                "(they apply to every analog block) or the analog-conv block"
            )
    try:
        spec = config.model.blocks[index].circuit_spec()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if solver.name == "ngspice":
        try:
            conv_solver = conv_solver_for(solver, None, where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    else:
        conv_solver = build_conv_solver(config.solver, "fast")
    return ConvAnalogBlock(spec, conv_solver, **options)


def block_method(config: RunConfig, index: int) -> GradientMethod:
    """The training gradient method of ``model.blocks[index]``, with that block's EP measurement."""
    method = config.train.gradient_method()
    if isinstance(method, EquilibriumPropagation):
        method = replace(method, measurement=config.block_section(index, "measurement"))
    return method


def _digital(block) -> nn.Module:
    kind = block.type
    if kind == "linear":
        return nn.Linear(block.in_features, block.out_features, bias=block.bias)
    if kind == "conv":
        return nn.Conv2d(block.in_channels, block.out_channels, block.kernel_size, block.stride, block.padding)
    if kind == "maxpool":
        return nn.MaxPool2d(block.kernel_size)
    if kind == "avgpool":
        return nn.AvgPool2d(block.kernel_size)
    if kind == "batchnorm1d":
        return nn.BatchNorm1d(block.num_features)
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(block.num_features)
    if kind == "layernorm":
        return nn.LayerNorm(block.num_features)
    if kind in ("dac", "adc"):
        return Converter(block.bits, block.lo, block.hi, kind=kind)
    if kind == "reshape":
        return Reshape(block.shape)
    if kind == "scale":
        return Gain(block.factor)
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "flatten": nn.Flatten}[kind]()


def build_model(
    config: RunConfig,
    input_shape: tuple[int, ...],
    solver: EquilibriumSolver | None = None,
    n_classes: int | None = None,
    device: torch.device | None = None,
) -> FFEBM:
    """The ff-EBM of ``config.model`` with seeded parameters, checked on a dummy batch of
    ``input_shape`` (one sample's shape) so that blocks that do not chain fail here, by index, and
    (given ``n_classes``) that the last block outputs one value per class. The memory the analog
    blocks need on ``device`` (default CPU) is checked before any of them is allocated."""
    dtype = torch_dtype(config)
    specs, keys = [], []
    for i, block in enumerate(config.model.blocks):
        if block.type == "analog":
            try:
                specs.append(block.circuit_spec())
            except ValueError as exc:  # the model library changed on disk since the configuration was read
                raise ConfigError(f"model.blocks[{i}]: {exc}") from None
            keys.append(f"model.blocks[{i}].sizes")
    check_memory(specs, dtype, config.train.batch_size, device or torch.device("cpu"), ", ".join(keys))
    torch.manual_seed(config.seed.init)
    solver = solver or build_solver(config.solver)
    blocks: list[nn.Module] = []
    n_analog = n_hopfield = n_conv = 0
    for i, block in enumerate(config.model.blocks):
        if block.type == "hopfield":
            seed = block_seed(config.seed.init, i)
            method = config.train.gradient_method()
            module = HopfieldBlock(block.spec(), method, seed=seed, dtype=dtype, name=f"hopfield{n_hopfield}")
            n_hopfield += 1
        elif block.type == "analog-conv":
            method = config.train.gradient_method()
            seed = block_seed(config.seed.init, i)
            module = conv_block(config, i, solver, method=method, seed=seed, dtype=dtype, name=f"analog-conv{n_conv}")
            n_conv += 1
        elif block.type == "analog":
            module = analog_block(
                config,
                i,
                solver=solver,
                method=block_method(config, i),
                seed=block_seed(config.seed.init, i),
                device_seed=_device_seed(config, i),
                dtype=dtype,
                name=f"analog{n_analog}",
            )
            refusal = None if module.spec.user_models is None else module.spec.user_models.fast_refusal()
            if refusal and solver.name != "ngspice":
                raise ConfigError(f"model.blocks[{i}]: {refusal}")
            n_analog += 1
        else:
            module = _digital(block)
        blocks.append(module.to(dtype))
    model = FFEBM(blocks)
    fast = get_solver("fast")
    circuits = [*model.analog_blocks(), *model.conv_blocks()]
    saved = [b.solver for b in circuits]
    model.set_solver(fast)  # conv blocks on ngspice go to the layer-wise solver for the shape check
    x = torch.zeros(2, *input_shape, dtype=dtype)
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            try:
                if isinstance(block, AnalogBlock) and block.spec.user_models is not None:
                    # Only shapes are checked here, and the fast solver may not simulate user models.
                    batch = block.spec.source_voltages(x.flatten(1)).shape[0]
                    x = torch.zeros(batch, block.spec.n_outputs, dtype=dtype)
                    continue
                x = block(x)
            except SolverError:  # a failed solve is not a shape mismatch: exit 3, with the solver's words
                raise
            except (RuntimeError, ValueError) as exc:
                raise ConfigError(
                    f"model.blocks[{i}] ({config.model.blocks[i].type}): does not accept the output of "
                    f"the block before it, shape {list(x.shape[1:])}: {exc}"
                ) from None
    for block, s in zip(circuits, saved, strict=True):
        block.solver = s
    if n_classes is not None and tuple(x.shape[1:]) != (n_classes,):
        last = len(config.model.blocks) - 1
        raise ConfigError(
            f"model.blocks[{last}] ({config.model.blocks[last].type}): the model outputs shape {list(x.shape[1:])} "
            f"per sample but the data has {n_classes} classes; make the last block output {n_classes} values "
            f"(the last of an analog block's sizes, a linear block's out_features)"
        )
    return model


def make_optimizer(model: FFEBM, train: TrainConfig) -> torch.optim.Optimizer:
    """One parameter group for the digital parameters (``lr``, ``weight_decay``) and one per analog
    block, whose conductances are in siemens: ``lr * analog_lr_scale``, no weight decay (a decay
    towards 0 S has no device meaning). The default scale makes ``lr`` act on conductances measured
    in units of the device range ``R = g_max - g_min``: Adam's steps do not depend on the gradient's
    units, so its scale is ``R``; SGD's step is ``lr`` times a gradient in 1/S, so its scale is ``R^2``."""
    groups, analog = [], set()
    for block in [*model.analog_blocks(), *model.conv_blocks()]:
        params = block.conductances()
        device_range = block.spec.conductance
        span = device_range.g_max_S - device_range.g_min_S
        scale = train.analog_lr_scale or analog_scale(train.optimizer, span)
        groups.append({"params": params, "lr": train.lr * scale, "weight_decay": 0.0})
        analog.update(id(p) for p in params)
    digital = [p for p in model.parameters() if id(p) not in analog]
    if digital:
        groups.insert(0, {"params": digital, "lr": train.lr, "weight_decay": train.weight_decay})
    try:
        return build_optimizer(train.optimizer, groups, train.lr, train.momentum, train.optimizer_options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def make_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, steps: int):
    """The learning-rate schedule of ``train`` over ``steps`` optimizer steps (``None`` for none)."""
    try:
        return build_schedule(train.schedule, optimizer, steps, train.schedule_options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
