"""The ``[[model.blocks]]`` of a configuration: analog blocks (each builds its
:class:`~analog.circuit.CircuitSpec`) and the digital blocks between them.

An analog block's keys are the circuit's parameters; their defaults and bounds are the library's
(:class:`~analog.circuit.CircuitSpec`, :class:`~analog.diode.DiodeModel`,
:class:`~analog.devices.ConductanceRange`): validating a block builds its circuit spec, and the
library's error becomes the key-path error. ``devices``, ``io`` and ``measurement`` override the
top-level sections of the same name for this block, key by key.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from analog.circuit import CircuitSpec
from analog.conv_circuit import ConvCircuitSpec
from analog.devices import ConductanceRange
from analog.diode import DiodeModel
from analog.model_library import load_model_library
from analog.models import UserModels
from analog.peripherals import Peripherals
from cosim.hopfield import ACTIVATIONS, INIT_METHODS, HopfieldSpec

__all__ = [
    "BLOCK_TYPES",
    "PERIPHERAL_KEYS",
    "AnalogBlockConfig",
    "AnalogConvBlockConfig",
    "BlockConfig",
    "HopfieldBlockConfig",
    "ModelConfig",
    "Strict",
    "library_defaults",
]


class Strict(BaseModel):
    """A configuration section: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def library_defaults(cls) -> dict[str, Any]:
    """``{field: default}`` of a library dataclass, so that a default lives in one place."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


_SPEC = library_defaults(CircuitSpec)
_DIODE = library_defaults(DiodeModel)
_RANGE = library_defaults(ConductanceRange)
_PERIPHERALS = library_defaults(Peripherals)
PERIPHERAL_KEYS = tuple(_PERIPHERALS)
"""Analog-block keys of the drivers, amplifiers and nudging sources (:mod:`analog.peripherals`)."""
_DIODE_KEYS = {
    "is_A": "diode_is_A",
    "n": "diode_n",
    "xti": "diode_xti",
    "eg_eV": "diode_eg_eV",
    "bv_V": "diode_bv_V",
    "ibv_A": "diode_ibv_A",
    "area": "diode_area",
}
_CARD_KEYS = ("diode_is_A", "diode_n", "diode_xti", "diode_eg_eV", "diode_bv_V", "diode_ibv_A")
"""Keys a ``diode_model`` card replaces."""
_SPICE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_]{0,63}$"
"""A SPICE model or subcircuit name; it may start with a digit (``1N4148``)."""


def _renamed(exc: ValueError, keys: dict[str, str]) -> ValueError:
    """The library's ``"field: message"`` error with the field named as the configuration names it."""
    match = re.match(r"^([A-Za-z_]\w*)(\[\d+\])?: ", str(exc))
    if not match:
        return exc
    return ValueError(keys.get(match[1], match[1]) + str(exc)[len(match[1]) :])


class _CrossbarKeys(Strict):
    """The keys every kind of analog block (dense or convolutional) shares."""

    input_gain_V: float = _SPEC["input_gain_V"]
    bias_V: float | None = _SPEC["bias_V"]
    diode_up_V: float | None = _SPEC["diode_up_V"]
    diode_down_V: float | None = _SPEC["diode_down_V"]
    nudge_scale_V: float = _SPEC["nudge_scale_V"]
    """Voltage scale of the nudge: its full-scale current is ``g_max_S * nudge_scale_V`` and
    ``train.beta`` a fraction of it; set it to the design's node swing (sub-volt designs)."""
    g_min_S: float = _RANGE["g_min_S"]
    g_max_S: float = _RANGE["g_max_S"]
    diode_is_A: float = _DIODE["is_A"]
    diode_n: float = _DIODE["n"]
    temperature_C: float = _DIODE["temperature_C"]
    """Device temperature, degrees Celsius (every diode, and the conductances' TC1/TC2 if set)."""
    tnom_C: float = _DIODE["tnom_C"]
    """Temperature at which the diode parameters were measured, degrees Celsius (SPICE ``TNOM``)."""


class AnalogBlockConfig(_CrossbarKeys):
    type: Literal["analog"]
    sizes: list[int]
    """``[n_in, hidden..., n_out]`` (:attr:`CircuitSpec.layer_sizes`)."""
    input_pairs: bool = _SPEC["input_pairs"]
    hidden_pairs: bool = _SPEC["hidden_pairs"]
    """Dual-rail hidden layers: each hidden node also drives the next crossbar through an inverting
    bidirectional amplifier, so that every crossbar realises signed weights (:attr:`CircuitSpec.hidden_pairs`)."""
    amplifier_gains: list[float | None] | None = None
    conductance_tc1: float = _SPEC["conductance_tc1"]
    """First-order temperature coefficient of the crossbar devices' resistance, 1/K (ngspice
    ``tc1``, about ``tnom_C``)."""
    conductance_tc2: float = _SPEC["conductance_tc2"]
    """Second-order temperature coefficient of the devices' resistance, 1/K^2 (ngspice ``tc2``)."""
    diode_xti: float = _DIODE["xti"]
    """Saturation-current temperature exponent ``XTI`` of the neuron diodes."""
    diode_eg_eV: float = _DIODE["eg_eV"]
    """Activation energy ``EG`` of the neuron diodes, electron volts."""
    diode_bv_V: float | None = _DIODE["bv_V"]
    """Reverse breakdown voltage ``BV`` of the neuron diodes, volts; ``None``: no breakdown."""
    diode_ibv_A: float = _DIODE["ibv_A"]
    """Current at the breakdown voltage ``IBV``, amperes."""
    diode_area: float = _DIODE["area"]
    """Instance area of every neuron diode (ngspice's ``D ... area=``): multiplies ``IS``, divides
    ``RS``; the device spread ``devices.diode_is_sigma`` multiplies it per diode."""
    wire_ohm: float | None = _SPEC["wire_ohm"]
    """Resistance of every crossbar wire segment (rows and columns, one per cross-point), ohms;
    ``None``: ideal wires. Both solvers include it exactly (see :mod:`analog.wires`)."""
    driver_ohm: float | None = _PERIPHERALS["driver_ohm"]
    """Output resistance of every input driver (DAC), ohms; ``None``: ideal (see :mod:`analog.peripherals`)."""
    amp_out_ohm: float | None = _PERIPHERALS["amp_out_ohm"]
    """Output resistance of every amplifier's forward stage, ohms; ``None``: ideal."""
    amp_in_ohm: float | None = _PERIPHERALS["amp_in_ohm"]
    """Input resistance of every amplifier (node to ground), ohms; ``None``: infinite."""
    amp_offset_V: float = _PERIPHERALS["amp_offset_V"]
    """Input-referred offset of every amplifier, volts."""
    amp_swing_V: float | None = _PERIPHERALS["amp_swing_V"]
    """Output swing limit +/-S of every amplifier (smooth), volts; ``None``: unlimited. Breaks the
    circuit's reciprocity: EP is then approximate (``cosim gradcheck --fidelity`` measures it)."""
    amp_gbw_Hz: float | None = _PERIPHERALS["amp_gbw_Hz"]
    """Gain-bandwidth product of every amplifier, hertz (a single pole at GBW / A; transients only)."""
    nudge_out_ohm: float | None = _PERIPHERALS["nudge_out_ohm"]
    """Output resistance of every nudging current source, ohms; ``None``: infinite."""
    nudge_compliance_V: float | None = _PERIPHERALS["nudge_compliance_V"]
    """Compliance of the nudging sources (node voltage up to +C sourcing, down to -C sinking), volts."""
    nudge_knee_V: float = _PERIPHERALS["nudge_knee_V"]
    """Width of the compliance edge, volts."""
    model_file: str | None = Field(None, min_length=1, max_length=4096)
    """SPICE model library (``.model``/``.subckt``, see :mod:`analog.models`); a relative path is
    taken from the current directory. Validated when the configuration is read."""
    diode_model: str | None = Field(None, pattern=_SPICE_NAME)
    """Name of a ``.model NAME D`` card of ``model_file`` used for every neuron diode (instead of
    ``diode_is_A``, ``diode_n``, ``diode_xti``, ``diode_eg_eV``, ``diode_bv_V``, ``diode_ibv_A``; the fast
    solver accepts cards that set IS, N, TNOM, XTI, EG, RS, BV, IBV, NBV, TCV, AREA and charge parameters)."""
    neuron_subckt: str | None = Field(None, pattern=_SPICE_NAME)
    """Name of a one-pin ``.subckt`` of ``model_file`` placed at every free node instead of the
    diodes (ngspice only)."""
    devices: dict[str, Any] = Field(default_factory=dict)
    """Keys of ``[devices]`` that differ for this block (see :class:`analog.devices.DeviceConfig`)."""
    io: dict[str, Any] = Field(default_factory=dict)
    """Keys of ``[io]`` that differ for this block (see :class:`analog.devices.IOConfig`)."""
    measurement: dict[str, Any] = Field(default_factory=dict)
    """Keys of ``[measurement]`` that differ for this block (see :class:`analog.readout.Measurement`)."""

    @model_validator(mode="after")
    def _user_models(self):
        if self.model_file is None:
            if self.diode_model is not None or self.neuron_subckt is not None:
                raise ValueError("diode_model / neuron_subckt need model_file (the library that defines them)")
        elif self.diode_model is not None:
            # Compared with the defaults, not with the keys given: a stored configuration (checkpoint,
            # config.json) lists every key with its value, and must read back.
            given = [k for k in _CARD_KEYS if getattr(self, k) != type(self).model_fields[k].default]
            if given:
                raise ValueError(
                    f"diode_model replaces {', '.join(given)}: set the card's parameters in the card, "
                    "or drop diode_model"
                )
        return self

    @model_validator(mode="after")
    def _circuit(self):
        self.circuit_spec()
        return self

    def user_models(self) -> UserModels | None:
        """The validated :class:`analog.models.UserModels` of ``model_file`` (``None`` without one)."""
        if self.model_file is None:
            return None
        return UserModels(load_model_library(self.model_file), self.diode_model, self.neuron_subckt)

    def circuit_spec(self) -> CircuitSpec:
        """The block's :class:`CircuitSpec`; a ``ValueError`` names the key that is out of range."""
        user = self.user_models()
        try:
            diode = DiodeModel(
                is_A=self.diode_is_A,
                n=self.diode_n,
                temperature_C=self.temperature_C,
                tnom_C=self.tnom_C,
                xti=self.diode_xti,
                eg_eV=self.diode_eg_eV,
                bv_V=self.diode_bv_V,
                ibv_A=self.diode_ibv_A,
                area=self.diode_area,
            )
        except ValueError as exc:
            raise _renamed(exc, _DIODE_KEYS) from None
        if user is not None and (card := user.diode(self.temperature_C, self.tnom_C, self.diode_area)) is not None:
            diode = card
        try:
            conductance = ConductanceRange(self.g_min_S, self.g_max_S)
            peripherals = Peripherals(**{k: getattr(self, k) for k in PERIPHERAL_KEYS})
        except ValueError as exc:
            raise _renamed(exc, {}) from None
        try:
            return CircuitSpec(
                layer_sizes=tuple(self.sizes),
                input_pairs=self.input_pairs,
                input_gain_V=self.input_gain_V,
                hidden_pairs=self.hidden_pairs,
                bias_V=self.bias_V,
                diode_up_V=self.diode_up_V,
                diode_down_V=self.diode_down_V,
                diode=diode,
                amplifier_gains=None if self.amplifier_gains is None else tuple(self.amplifier_gains),
                conductance=conductance,
                nudge_scale_V=self.nudge_scale_V,
                conductance_tc1=self.conductance_tc1,
                conductance_tc2=self.conductance_tc2,
                wire_ohm=self.wire_ohm,
                user_models=user,
                peripherals=peripherals,
            )
        except ValueError as exc:
            raise _renamed(exc, {"layer_sizes": "sizes"}) from None


_CONV = library_defaults(ConvCircuitSpec)


class AnalogConvBlockConfig(_CrossbarKeys):
    """A convolutional analog block (:mod:`analog.conv_circuit`): tied crossbar devices ``k x k`` per
    channel pair (stride 1, 'same' padding), dual-rail hidden layers through inverting amplifiers,
    ideal devices and peripherals. It takes ``[channels[0], H, W]`` maps (``side = [H, W]``) and
    gives ``[channels[-1], H, W]`` output voltages."""

    type: Literal["analog-conv"]
    channels: list[int]
    """``[c_in, c_1, ..., c_L]``."""
    side: list[int]
    """``[H, W]`` of every layer's grid."""
    kernel_size: int = _CONV["kernel_size"]
    """Odd kernel side ``k``."""

    @model_validator(mode="after")
    def _circuit(self):
        self.circuit_spec()
        return self

    def circuit_spec(self) -> ConvCircuitSpec:
        """The block's :class:`~analog.conv_circuit.ConvCircuitSpec`; a ``ValueError`` names the key."""
        try:
            diode = DiodeModel(
                is_A=self.diode_is_A, n=self.diode_n, temperature_C=self.temperature_C, tnom_C=self.tnom_C
            )
        except ValueError as exc:
            raise _renamed(exc, _DIODE_KEYS) from None
        try:
            return ConvCircuitSpec(
                channels=tuple(self.channels),
                side=tuple(self.side),
                kernel_size=self.kernel_size,
                input_gain_V=self.input_gain_V,
                bias_V=self.bias_V,
                diode_up_V=self.diode_up_V,
                diode_down_V=self.diode_down_V,
                diode=diode,
                conductance=ConductanceRange(self.g_min_S, self.g_max_S),
                nudge_scale_V=self.nudge_scale_V,
            )
        except ValueError as exc:
            raise _renamed(exc, {}) from None


class LinearConfig(Strict):
    type: Literal["linear"]
    in_features: int = Field(ge=1)
    out_features: int = Field(ge=1)
    bias: bool = True


class ConvConfig(Strict):
    type: Literal["conv"]
    in_channels: int = Field(ge=1)
    out_channels: int = Field(ge=1)
    kernel_size: int = Field(ge=1, le=31)
    stride: int = Field(1, ge=1)
    padding: int = Field(0, ge=0)


class PoolConfig(Strict):
    type: Literal["maxpool", "avgpool"]
    kernel_size: int = Field(2, ge=1)


class ActivationConfig(Strict):
    type: Literal["relu", "tanh", "sigmoid", "flatten"]


class NormConfig(Strict):
    type: Literal["batchnorm1d", "batchnorm2d", "layernorm"]
    num_features: int = Field(ge=1)


class ReshapeConfig(Strict):
    type: Literal["reshape"]
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    """Shape of one sample, e.g. ``[1, 8, 8]`` to feed flat digits to a convolution."""


class ScaleConfig(Strict):
    type: Literal["scale"]
    factor: float = Field(gt=0, le=1e6)
    """Fixed gain, e.g. from output volts to logits."""


class ConverterConfig(Strict):
    type: Literal["dac", "adc"]
    bits: int | None = Field(None, ge=1, le=24)
    """Resolution; omit for an ideal converter."""
    lo: float = Field(-1.0, allow_inf_nan=False)
    """Lowest value converted, in the block's units (volts for a DAC's output, an ADC's input)."""
    hi: float = Field(1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _range(self):
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        return self


_HOPFIELD = library_defaults(HopfieldSpec)


class HopfieldBlockConfig(Strict):
    """A Deep Hopfield Network energy block (:mod:`cosim.hopfield`): the paper's idealised block.

    The switch between a circuit and its idealisation is the block's ``type``: an analog block
    ``{type = "analog", sizes = [64, 32, 10], ...}`` and ``{type = "hopfield", sizes = [64, 32, 10]}``
    take the same input and give one output per unit of the last layer (volts there, states in
    ``[0, 1]`` here), trained by the same ``train.method`` and ``train.beta`` (the circuit keys are
    not keys of a Hopfield block: drop them with the switch). ``channels`` instead of ``sizes``
    makes a convolutional block, which takes ``[C, H, W]`` maps (a ``reshape`` block before it)."""

    type: Literal["hopfield"]
    sizes: list[int] | None = None
    """Dense block: ``[n_in, hidden..., n_out]``."""
    channels: list[int] | None = None
    """Convolutional block: ``[c_in, c_1, ..., c_L]`` (with ``kernel_size``, ``padding``)."""
    kernel_size: int | None = _HOPFIELD["kernel_size"]
    """Convolutional block: side of the ``k x k`` kernels (stride 1)."""
    padding: int = _HOPFIELD["padding"]
    """Convolutional block: zero padding of each convolution."""
    pools: list[int] | None = _HOPFIELD["pools"]
    """Convolutional block: max-pooling side after each convolution (1: none), e.g. ``[2, 2, 1]``."""
    dense: list[int] = Field(default_factory=list)
    """Convolutional block: dense layers after the last feature map, e.g. ``[256]``."""
    input_side: int | None = _HOPFIELD["input_side"]
    """Convolutional block: side of the square input maps (needed with ``dense``)."""
    input_weights: bool = _HOPFIELD["input_weights"]
    """``false``: the input drives the first layer one to one (no weights; same shape)."""
    activation: Literal[ACTIVATIONS] = _HOPFIELD["activation"]
    """``clamp`` (``clamp(u, 0, 1)``, the paper's), ``clamp-half`` or ``sigmoid`` (smooth)."""
    clamp_output: bool = _HOPFIELD["clamp_output"]
    """Apply the activation to the output layer (``false``: a linear output, the paper's last block).
    A clamped output unit held at 0 has no exact gradient, so ``train.method = "implicit"`` (or EP
    at a tiny beta) cannot revive it, while EP's finite nudge can: on digits, 64-64-10 with a
    clamped output trains to 97% with ep-centered beta 0.1 but stalls near 28% with implicit;
    with ``clamp_output = false`` both reach 97%."""
    bias: bool = _HOPFIELD["bias"]
    t1: int = _HOPFIELD["t1"]
    """Free-phase iterations (the paper's T1); with ``tol``, their maximum."""
    t2: int = _HOPFIELD["t2"]
    """Nudged-phase iterations (the paper's T2); with ``tol``, their maximum."""
    tol: float | None = _HOPFIELD["tol"]
    """Stop a phase once no state moved by more than ``tol`` in an iteration; one that has not by
    ``t1`` / ``t2`` iterations fails (exit 3). Omit to run exactly ``t1`` / ``t2``."""
    init: Literal[INIT_METHODS] = _HOPFIELD["init"]
    """``uniform`` (``init_scale``) or ``goe`` (the paper code's symmetric Gaussian kernels, ``init_variance``)."""
    init_scale: float = _HOPFIELD["init_scale"]
    """Initial weights uniform in ``+-init_scale / sqrt(fan_in)``."""
    init_variance: float = _HOPFIELD["init_variance"]
    """``goe``: the kernels' variance parameter ``V``."""

    @model_validator(mode="after")
    def _spec(self):
        self.spec()
        return self

    def spec(self) -> HopfieldSpec:
        """The block's :class:`~cosim.hopfield.HopfieldSpec`; a ``ValueError`` names the key."""
        fields = {k: getattr(self, k) for k in _HOPFIELD}
        for key in ("sizes", "channels", "pools", "dense"):
            if fields[key] is not None:
                fields[key] = tuple(fields[key])
        return HopfieldSpec(**fields)


BlockConfig = Annotated[
    AnalogBlockConfig
    | AnalogConvBlockConfig
    | HopfieldBlockConfig
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


class ModelConfig(Strict):
    blocks: list[BlockConfig] = Field(min_length=1)


BLOCK_TYPES = frozenset(
    t for cls in get_args(get_args(BlockConfig)[0]) for t in get_args(cls.model_fields["type"].annotation)
)
"""Every block ``type`` a configuration may name."""
