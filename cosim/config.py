"""Run configuration: TOML files validated by pydantic, unknown keys and out-of-range values refused.

A configuration names the data, the model (an ordered list of digital and analog blocks), and the
settings of each command (``solve``, ``gradcheck``, ``train``). Every error names the key path
(``model.blocks[1].kernel_size``), the allowed range and, where it helps, the fix.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from analog.devices import DeviceConfig

__all__ = ["ConfigError", "RunConfig", "load_config", "parse_config"]


# Validate the frozen dataclass directly, with unknown keys refused like everywhere else.
DeviceConfig.__pydantic_config__ = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalogBlockConfig(_Strict):
    type: Literal["analog"]
    sizes: list[Annotated[int, Field(ge=1, le=100_000)]] = Field(min_length=2)
    """``[n_in, hidden..., n_out]``."""
    input_pairs: bool = True
    input_gain_V: float = Field(1.0, gt=0, le=100)
    bias_V: float | None = Field(1.0, gt=0, le=100)
    diode_up_V: float | None = Field(0.0, ge=-100, le=100)
    diode_down_V: float | None = Field(0.0, ge=-100, le=100)
    amplifier_gains: list[Annotated[float, Field(gt=0, le=1000)] | None] | None = None
    g_min_S: float = Field(1e-6, gt=0, lt=1)
    g_max_S: float = Field(1e-4, gt=0, lt=1)
    diode_is_A: float = Field(1e-14, gt=0, lt=1e-3)
    diode_n: float = Field(1.0, ge=0.5, le=10)
    temperature_C: float = Field(27.0, gt=-273.15, le=500)
    wire_ohm: float | None = Field(None, gt=0, le=1e4)
    """Resistance of every crossbar wire segment (rows and columns, one per cross-point), ohms;
    ``None``: ideal wires. Both solvers include it exactly (see :mod:`analog.wires`)."""
    model_file: str | None = Field(None, min_length=1, max_length=4096)
    """SPICE model library (``.model``/``.subckt``, see :mod:`analog.models`); a relative path is
    taken from the current directory. Validated when the configuration is read."""
    diode_model: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    """Name of a ``.model NAME D`` card of ``model_file`` used for every neuron diode (instead of
    ``diode_is_A`` / ``diode_n``; the fast solver accepts cards that set only IS and N)."""
    neuron_subckt: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    """Name of a one-pin ``.subckt`` of ``model_file`` placed at every free node instead of the
    diodes (ngspice only)."""

    @model_validator(mode="after")
    def _user_models(self):
        if self.model_file is None:
            if self.diode_model is not None or self.neuron_subckt is not None:
                raise ValueError("diode_model / neuron_subckt need model_file (the library that defines them)")
            return self
        if self.diode_model is not None and {"diode_is_A", "diode_n"} & self.model_fields_set:
            raise ValueError("diode_model replaces diode_is_A and diode_n: set one or the other")
        self.user_models()
        return self

    def user_models(self):
        """The validated :class:`analog.models.UserModels` of ``model_file`` (``None`` without one)."""
        if self.model_file is None:
            return None
        from analog.models import UserModels, load_model_library

        return UserModels(load_model_library(self.model_file), self.diode_model, self.neuron_subckt)

    @model_validator(mode="after")
    def _ranges(self):
        if self.g_min_S >= self.g_max_S:
            raise ValueError(f"g_min_S ({self.g_min_S}) must be below g_max_S ({self.g_max_S})")
        if self.amplifier_gains is not None and len(self.amplifier_gains) != len(self.sizes) - 2:
            raise ValueError(
                f"amplifier_gains needs {len(self.sizes) - 2} entries (one per pair of free layers), "
                f"got {len(self.amplifier_gains)}"
            )
        return self


class LinearConfig(_Strict):
    type: Literal["linear"]
    in_features: int = Field(ge=1)
    out_features: int = Field(ge=1)
    bias: bool = True


class ConvConfig(_Strict):
    type: Literal["conv"]
    in_channels: int = Field(ge=1)
    out_channels: int = Field(ge=1)
    kernel_size: int = Field(ge=1, le=31)
    stride: int = Field(1, ge=1)
    padding: int = Field(0, ge=0)


class PoolConfig(_Strict):
    type: Literal["maxpool", "avgpool"]
    kernel_size: int = Field(2, ge=1)


class ActivationConfig(_Strict):
    type: Literal["relu", "tanh", "sigmoid", "flatten"]


class NormConfig(_Strict):
    type: Literal["batchnorm1d", "batchnorm2d", "layernorm"]
    num_features: int = Field(ge=1)


class ReshapeConfig(_Strict):
    type: Literal["reshape"]
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    """Shape of one sample, e.g. ``[1, 8, 8]`` to feed flat digits to a convolution."""


class ScaleConfig(_Strict):
    type: Literal["scale"]
    factor: float = Field(gt=0, le=1e6)
    """Fixed gain, e.g. from output volts to logits."""


class ConverterConfig(_Strict):
    type: Literal["dac", "adc"]
    bits: int | None = Field(None, ge=1, le=24)
    """Resolution; omit for an ideal converter."""
    lo: float = -1.0
    hi: float = 1.0

    @model_validator(mode="after")
    def _range(self):
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        return self


BlockConfig = Annotated[
    AnalogBlockConfig
    | LinearConfig
    | ConvConfig
    | PoolConfig
    | ActivationConfig
    | NormConfig
    | ReshapeConfig
    | ScaleConfig
    | ConverterConfig,
    Field(discriminator="type"),
]


class ModelConfig(_Strict):
    blocks: list[BlockConfig] = Field(min_length=1)


class DataConfig(_Strict):
    dataset: Literal["digits", "mnist", "fashion-mnist", "cifar10"] = "digits"
    root: str = ""
    """Local file or folder holding the dataset (e.g. ``../shared/data/mnist.pkl.gz``); empty: the
    dataset's default location, downloaded through torchvision when online."""
    download: bool = True
    """Allow torchvision to download MNIST / Fashion-MNIST / CIFAR-10 when ``root`` lacks them."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Held-out fraction for ``digits`` (fixed split by ``seed``)."""
    train_subset: int = Field(0, ge=0)
    """Use only the first N training samples (0: all)."""
    test_subset: int = Field(0, ge=0)

    @field_validator("root")
    @classmethod
    def _safe_root(cls, root: str) -> str:
        # Checked where every command and every checkpoint's stored config passes, so that a hostile
        # pickle is refused before a sweep starts its workers; cosim.data reads it as safely.
        if root.endswith(".pkl.gz") and Path(root).is_file():
            from cosim.io import UnsafePickleError, check_array_pickle

            try:
                check_array_pickle(root)
            except UnsafePickleError as exc:
                raise ValueError(f"{exc}; give the classic MNIST pickle (mnist.pkl.gz)") from None
        return root


class SolverConfig(_Strict):
    name: Literal["fast", "ngspice"] = "fast"
    tol_V: float | None = Field(None, gt=0, lt=1)
    max_iterations: int = Field(100, ge=1, le=10_000)
    workers: int = Field(1, ge=1, le=64)
    """ngspice worker processes."""


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    optimizer: str = "adam"
    """Any optimizer of ``torch.optim`` by class name, case-insensitive: ``adam``, ``sgd``,
    ``adamw``, ``rmsprop``, ``nadam``, ... (not ``lbfgs`` or ``sparseadam``, which need a closure or
    sparse gradients)."""
    optimizer_options: dict[str, float | bool | list[float]] = Field(default_factory=dict)
    """Further keyword arguments of the optimizer, e.g. ``{betas = [0.9, 0.99], amsgrad = true}``
    (``lr``, ``weight_decay`` and SGD's ``momentum`` have their own keys)."""
    lr: float = Field(1e-3, gt=0, le=10)
    """Learning rate. Conductances are in siemens: the analog-block learning rate is ``lr`` times
    ``analog_lr_scale`` (default: the device range ``R = g_max - g_min`` for optimizers whose step
    does not scale with the gradient, such as Adam; ``R^2`` for SGD and ASGD), so that ``lr`` acts on
    conductances in units of ``R``."""
    analog_lr_scale: float | None = Field(None, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    """Momentum of SGD (other optimizers take theirs from ``optimizer_options``)."""
    weight_decay: float = Field(0.0, ge=0)
    schedule: str = "cosine"
    """Learning-rate schedule, stepped once per batch: ``none``, ``cosine`` (to 0 over the run) or any
    scheduler of ``torch.optim.lr_scheduler`` by class name, case-insensitive (``steplr``,
    ``onecycle``...; periods such as ``step_size`` count batches)."""
    schedule_options: dict[str, float | bool | list[float]] = Field(default_factory=dict)
    """Keyword arguments of the scheduler, e.g. ``{step_size = 500, gamma = 0.5}``."""
    method: Literal["ep-centered", "ep-positive", "ep-negative", "implicit"] = "ep-centered"
    beta: float = Field(0.05, gt=0, le=1)
    loss: Literal["cross-entropy", "mse"] = "cross-entropy"
    measure_bits: int | None = Field(None, ge=1, le=24)
    """Resolution of the ADC reading the node voltages and source currents of EP (None: exact)."""
    measure_range_V: float = Field(1.0, gt=0, le=100)
    measure_range_A: float = Field(1e-3, gt=0, le=10)
    ngspice_eval_samples: int = Field(200, ge=0)
    """Test samples re-evaluated with every analog block in ngspice after training (0: skip)."""
    checkpoint_every: int = Field(1, ge=1)

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, name: str) -> str:
        from cosim.optim import optimizer_class

        optimizer_class(name)
        return name

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, name: str) -> str:
        from cosim.optim import check_schedule_name

        check_schedule_name(name)
        return name

    @field_validator("optimizer_options")
    @classmethod
    def _optimizer_options(cls, options: dict, info: ValidationInfo) -> dict:
        from cosim.optim import check_optimizer_options

        if "optimizer" in info.data:  # else the name was refused already
            check_optimizer_options(info.data["optimizer"], options)
        return options

    @field_validator("schedule_options")
    @classmethod
    def _schedule_options(cls, options: dict, info: ValidationInfo) -> dict:
        from cosim.optim import check_schedule_options

        if "schedule" in info.data:
            check_schedule_options(info.data["schedule"], options)
        return options


class SolveConfig(_Strict):
    samples: int = Field(64, ge=1, le=100_000)
    inputs: Literal["random", "data"] = "random"
    block: int = Field(0, ge=0)
    """Which analog block of the model to solve (index among analog blocks)."""


class GradcheckConfig(_Strict):
    samples: int = Field(32, ge=1, le=100_000)
    betas: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.2, 0.1, 0.05, 0.025, 0.0125], min_length=1
    )
    methods: list[Literal["ep-centered", "ep-positive", "ep-negative"]] = Field(
        default_factory=lambda: ["ep-centered", "ep-positive"], min_length=1
    )


class EnergyConfig(_Strict):
    """``cosim energy``: capacitances, settling accuracy, converter and digital energies."""

    samples: int = Field(8, ge=1, le=4096)
    """Test samples whose inference and training step are simulated (figures are their mean)."""
    node_F: float = Field(10e-15, ge=0, lt=1e-3)
    """Capacitance of every free node to ground (neuron input, wiring), farads."""
    crosspoint_F: float = Field(0.5e-15, ge=0, lt=1e-3)
    """Capacitance each crossbar or bias device adds to the line it sits on, farads."""
    diode_F: float = Field(1e-15, ge=0, lt=1e-3)
    """Linear junction capacitance of each diode, farads."""
    settle_tol: float = Field(1e-3, gt=0, lt=1)
    """A phase has settled once every node is within this fraction of the phase's largest node
    voltage change from its equilibrium."""
    rtol: float = Field(1e-7, gt=0, lt=1)
    """Relative local error per step of the fast transient integrator."""
    atol_V: float = Field(1e-9, gt=0, lt=1)
    """Absolute local error per step of the fast transient integrator, volts."""
    t_max_s: float = Field(1e-3, gt=0, le=1e3)
    """Longest simulated time per phase, seconds."""
    adc_bits: int = Field(8, ge=1, le=24)
    adc_fom_J: float = Field(5e-15, gt=0, lt=1e-6)
    """Walden figure of merit, joules per conversion step: one conversion costs ``fom 2^bits``.
    Default: a mid-range value of B. Murmann, "ADC Performance Survey 1997-2024" (Walden FoM of
    low-to-moderate speed designs spans ~1-10 fJ/conv-step)."""
    dac_bits: int = Field(8, ge=1, le=24)
    dac_unit_F: float = Field(1e-15, gt=0, lt=1e-9)
    """Unit capacitor of a charge-redistribution DAC (voltage and nudging-current DACs): one
    conversion costs ``2^bits C_unit V_ref^2`` (a switched-capacitor estimate, not a survey figure)."""
    dac_ref_V: float = Field(1.0, gt=0, le=100)
    mac_energy_J: float = Field(4.6e-12, gt=0, lt=1e-6)
    """Digital multiply-accumulate, joules. Default: 32-bit float multiply (3.7 pJ) plus add (0.9 pJ)
    at 45 nm, M. Horowitz, "Computing's energy problem", ISSCC 2014 (8-bit integer: 0.2 + 0.03 pJ).
    Memory accesses are not included."""
    ngspice: bool = True
    """Also run ngspice: DC iteration counts of every phase and ``.tran`` waveforms for the plots."""
    ngspice_samples: int = Field(1, ge=1, le=64)
    """Samples simulated by ngspice ``.tran`` (one deck per sample and phase)."""


class RunConfig(_Strict):
    name: str = "run"
    seed: int = Field(0, ge=0)
    dtype: Literal["float64", "float32"] = "float64"
    device: str = "cpu"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    solver: SolverConfig = Field(default_factory=SolverConfig)
    devices: DeviceConfig = Field(default_factory=DeviceConfig)
    """Nonidealities of every analog block's devices (see :class:`analog.devices.DeviceConfig`)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    solve: SolveConfig = Field(default_factory=SolveConfig)
    gradcheck: GradcheckConfig = Field(default_factory=GradcheckConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration {source}:"]
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in {
                "analog",
                "linear",
                "conv",
                "maxpool",
                "avgpool",
                "relu",
                "tanh",
                "sigmoid",
                "flatten",
                "batchnorm1d",
                "batchnorm2d",
                "layernorm",
                "reshape",
                "scale",
                "dac",
                "adc",
            } and path.endswith("]"):
                continue  # pydantic's discriminator tag, not a key of the file
            else:
                path += ("." if path else "") + str(part)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            message = "unknown key (check its spelling; see configs/ for the accepted keys)"
        lines.append(f"  {path or '<top>'}: {message}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (give a path to a .toml file, e.g. configs/digits-demo.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_config(data, str(path))
