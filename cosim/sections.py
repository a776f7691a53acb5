"""The settings sections of a configuration: data, solver, training and the other commands."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from analog.settling import Capacitances, TransientOptions
from cosim.gradients import EquilibriumPropagation, GradientMethod, gradient_method
from cosim.model_config import Strict, library_defaults
from cosim.optim import check_optimizer_options, check_schedule_name, check_schedule_options, optimizer_class
from cosim.pickles import UnsafePickleError

_CAPS = library_defaults(Capacitances)
_TRANSIENT = library_defaults(TransientOptions)

__all__ = [
    "MAX_SEED",
    "DataConfig",
    "EnergyConfig",
    "GradcheckConfig",
    "SeedConfig",
    "SolveConfig",
    "SolverConfig",
    "TrainConfig",
]


MAX_SEED = 2**32 - 1
"""Largest seed: block seeds are ``seed * 1000 + index`` and must stay within torch's 64-bit
generator seeds, and 2^32 - 1 is the bound numpy and most tools share."""


class SeedConfig(Strict):
    """What each seed draws, so that a variability sweep does not also change the data split and
    the initialisation. ``seed = N`` in a file sets all three to ``N``."""

    data: int = Field(0, ge=0, le=MAX_SEED)
    """The train/test split of ``digits`` (other datasets have a fixed split) and the crops and
    flips of ``data.augment``."""
    init: int = Field(0, ge=0, le=MAX_SEED)
    """Initial parameters and the training order."""
    devices: int = Field(0, ge=0, le=MAX_SEED)
    """The device realisations: spreads, stuck devices, diode draws."""

    @model_validator(mode="before")
    @classmethod
    def _one_number(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= MAX_SEED:
                raise ValueError(f"must be an integer in [0, {MAX_SEED}], got {value}")
            return {"data": value, "init": value, "devices": value}
        return value


class DataConfig(Strict):
    dataset: Literal["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet32"] = "digits"
    """``digits`` (8x8, bundled), ``mnist`` / ``fashion-mnist`` (flattened 28x28), ``cifar10`` /
    ``cifar100`` / ``imagenet32`` (images ``[3, 32, 32]``; 10, 100 and 1000 classes)."""
    root: str = ""
    """Local file or folder holding the dataset (e.g. ``../shared/data/mnist.pkl.gz``; for CIFAR the
    folder holding ``cifar-10-batches-py`` / ``cifar-100-python``; for ImageNet32 the folder of its npz
    batches); empty: the dataset's default location, downloaded through torchvision when online
    (ImageNet32 needs a local folder)."""
    download: bool = True
    """Allow torchvision to download MNIST / Fashion-MNIST / CIFAR when ``root`` lacks them."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Held-out fraction for ``digits`` (fixed split by ``seed``)."""
    train_subset: int = Field(0, ge=0)
    """Use only the first N training samples (0: all)."""
    test_subset: int = Field(0, ge=0)
    augment: Literal["none", "crop-flip"] = "none"
    """Augmentation of the training batches of image datasets: ``crop-flip`` cuts each image at a
    random offset from its zero-padded copy and mirrors half of them left to right, drawn from
    ``seed.data`` and the epoch (see :mod:`cosim.data.augment`)."""
    crop_padding: int = Field(4, ge=0, le=16)
    """Zero padding of ``crop-flip``, pixels per side (the largest shift)."""

    @field_validator("root")
    @classmethod
    def _safe_root(cls, root: str, info: ValidationInfo) -> str:
        # Checked where every command and every checkpoint's stored config passes, so that a hostile
        # pickle is refused before a sweep starts its workers; cosim.data reads it as safely.
        from cosim.data import check_data_pickles  # not at the top: cosim.data imports cosim.config, hence this module

        if root and "dataset" in info.data:
            try:
                check_data_pickles(info.data["dataset"], root)
            except UnsafePickleError as exc:
                mnist = root.endswith(".pkl.gz")
                published = "the classic MNIST pickle (mnist.pkl.gz)" if mnist else "its files as published"
                raise ValueError(f"{exc}; give {published}") from None
        return root

    @model_validator(mode="after")
    def _augment_images(self):
        if self.augment != "none" and self.dataset in ("digits", "mnist", "fashion-mnist"):
            raise ValueError(
                f"augment: {self.augment!r} crops and flips images [C, H, W], but {self.dataset} samples are "
                "flattened vectors; use it with cifar10, cifar100 or imagenet32, or set augment = 'none'"
            )
        return self


class SolverConfig(Strict):
    name: Literal["auto", "fast", "fast-layerwise", "ngspice"] = "auto"
    """``auto``: ``fast-layerwise`` where it applies, else ``fast``; ``fast``: damped Newton (also
    wired crossbars and non-ideal peripherals); ``fast-layerwise``: layer sweeps with per-node
    Newton (faster on every block it solves, see benchmarks/); all Shockley-exact. ``ngspice``: the
    ground truth."""
    fuse: bool = False
    """Run the layer sweeps as compiled kernels (``fast-layerwise``/``auto``): faster single solves
    at small batches, after 10-30 s of compiling per process; no faster per training epoch as
    measured (see the README)."""
    compiled: bool = True
    """Sweep small batches (``B x free nodes <= 2048``) in numba-compiled calls
    (``fast-layerwise``/``auto``; :mod:`analog.solvers.compiled`): the same results, 2-3x faster
    single solves at B = 4; a few seconds of compiling once per process."""
    tol_V: float | None = Field(None, gt=0, lt=1)
    max_iterations: int = Field(100, ge=1, le=10_000)
    workers: int = Field(1, ge=1, le=64)
    """ngspice worker processes."""
    timeout_s: float | None = Field(None, gt=0, le=86_400)
    """Longest wait for one ngspice job before its worker is declared hung, killed and replaced,
    seconds; ``None``: a multiple of the time measured on earlier jobs (see
    :class:`analog.ngspice.NgspicePool`)."""


class TrainConfig(Strict):
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
    beta: float = EquilibriumPropagation.beta
    """Largest nudging current as a fraction of the full-scale current (see :mod:`cosim.gradients`);
    must be > 0 to train with EP. The EP measurement ADCs are ``[measurement]``."""
    loss: Literal["cross-entropy", "mse"] = "cross-entropy"
    ngspice_eval_samples: int = Field(200, ge=0)
    """Test samples re-evaluated with every analog block in ngspice after training (0: skip)."""
    checkpoint_every: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _method(self):
        self.gradient_method()
        if self.method != "implicit" and self.beta == 0:
            raise ValueError("beta: EP needs beta > 0 to measure a gradient (beta = 0 is the free phase)")
        return self

    def gradient_method(self) -> GradientMethod:
        """The training gradient method (without the blocks' measurement settings)."""
        return gradient_method(self.method, self.beta)

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, name: str) -> str:
        optimizer_class(name)
        return name

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, name: str) -> str:
        check_schedule_name(name)
        return name

    @field_validator("optimizer_options")
    @classmethod
    def _optimizer_options(cls, options: dict, info: ValidationInfo) -> dict:
        if "optimizer" in info.data:  # else the name was refused already
            check_optimizer_options(info.data["optimizer"], options)
        return options

    @field_validator("schedule_options")
    @classmethod
    def _schedule_options(cls, options: dict, info: ValidationInfo) -> dict:
        if "schedule" in info.data:
            check_schedule_options(info.data["schedule"], options)
        return options


class SolveConfig(Strict):
    samples: int = Field(64, ge=1, le=100_000)
    inputs: Literal["random", "data"] = "random"
    block: int = Field(0, ge=0)
    """Which analog block of the model to solve (index among analog blocks)."""


class GradcheckConfig(Strict):
    samples: int = Field(32, ge=1, le=100_000)
    betas: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.2, 0.1, 0.05, 0.025, 0.0125], min_length=1
    )
    methods: list[Literal["ep-centered", "ep-positive", "ep-negative"]] = Field(
        default_factory=lambda: ["ep-centered", "ep-positive"], min_length=1
    )


class EnergyConfig(Strict):
    """``cosim energy``: capacitances, settling accuracy, converter and digital energies."""

    samples: int = Field(8, ge=1, le=4096)
    """Test samples whose inference and training step are simulated (figures are their mean)."""
    node_F: float = _CAPS["node_F"]
    """Capacitance of every free node to ground (neuron input, wiring), farads."""
    crosspoint_F: float = _CAPS["crosspoint_F"]
    """Capacitance each crossbar or bias device adds to the line it sits on, farads."""
    diode_F: float = _CAPS["diode_F"]
    """Linear junction capacitance of each diode, farads. Not used for a block whose diode card
    (``model_file`` + ``diode_model``) sets ``CJO`` or ``TT``: the card's nonlinear junction and
    diffusion charge replaces it, in the fast transient and in ngspice."""
    settle_tol: float = _TRANSIENT["settle_tol"]
    """A phase has settled once every node is within this fraction of the phase's largest node
    voltage change from its equilibrium."""
    rtol: float = _TRANSIENT["rtol"]
    """Relative local error per step of the fast transient integrator."""
    atol_V: float = _TRANSIENT["atol_V"]
    """Absolute local error per step of the fast transient integrator, volts."""
    t_max_s: float = _TRANSIENT["t_max_s"]
    """Longest simulated time per phase, seconds."""
    hold_s: float = Field(10e-9, ge=0, le=1.0)
    """How long each phase is held after it has settled: the sample-and-hold / ADC aperture, seconds.
    A phase lasts the slowest sample's settling time plus this; at equilibrium the block draws its
    static power throughout. Default: an assumed 10 ns (one conversion of a ~100 MS/s SAR ADC)."""
    driver_quiescent_A: float = Field(0.0, ge=0, le=1.0)
    """Quiescent supply current of each input driver (one per input source), amperes; 0: not counted."""
    amp_quiescent_A: float = Field(0.0, ge=0, le=1.0)
    """Quiescent supply current of each bidirectional amplifier, amperes; 0: not counted."""
    peripheral_supply_V: float = Field(1.0, gt=0, le=100)
    """Supply voltage the drivers' and amplifiers' quiescent currents are drawn from, volts."""
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

    @model_validator(mode="after")
    def _library_types(self):
        self.capacitances()
        self.transient_options()
        return self

    def capacitances(self) -> Capacitances:
        """The block capacitances of the transients (:class:`analog.settling.Capacitances`)."""
        return Capacitances(node_F=self.node_F, crosspoint_F=self.crosspoint_F, diode_F=self.diode_F)

    def transient_options(self) -> TransientOptions:
        """Accuracy and extent of the transients (:class:`analog.settling.TransientOptions`)."""
        return TransientOptions(settle_tol=self.settle_tol, rtol=self.rtol, atol_V=self.atol_V, t_max_s=self.t_max_s)
