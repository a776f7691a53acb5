"""Optimizers and learning-rate schedules of ``torch`` chosen by name in a configuration.

Any ``torch.optim`` optimizer and any ``torch.optim.lr_scheduler`` scheduler that is built from
numbers alone can be named (case-insensitive); their keyword arguments come from the configuration
and are checked against the constructor's signature when the configuration is read, so that a typo
is an error naming the key before anything runs.
"""

from __future__ import annotations

import inspect

import torch

__all__ = [
    "analog_scale",
    "build_optimizer",
    "build_schedule",
    "check_optimizer_options",
    "check_schedule_name",
    "check_schedule_options",
    "optimizer_class",
    "schedule_spans_run",
]

_UNSUPPORTED_OPTIMIZERS = {
    "LBFGS": "it needs a closure that re-evaluates the loss, which would rerun every phase",
    "SparseAdam": "it needs sparse gradients",
}
_UNSUPPORTED_SCHEDULES = {
    "LambdaLR": "it needs a Python function",
    "MultiplicativeLR": "it needs a Python function",
    "SequentialLR": "it needs scheduler objects",
    "ChainedScheduler": "it needs scheduler objects",
    "ReduceLROnPlateau": "it needs a validation metric at every step",
    "CyclicLR": "its learning rates are absolute and would give the conductances (in siemens) the digital "
    "rate; onecycle scales with each parameter group",
}
_OWN_KEY = "set it with its own key train.{key}"
_COUNTS = {"step_size": 1, "T_max": 1, "T_0": 1, "T_mult": 1, "total_iters": 1}
"""Scheduler arguments that count batches (or a period factor) and their least value: torch takes
fractional and negative ones silently and divides by zero on 0 at the first step."""
_DECAYS = {"StepLR", "MultiStepLR", "ExponentialLR"}
"""Schedulers whose ``gamma`` multiplies the rate: it must lie in (0, 1] to decay it."""
_GRADIENT_SCALED = {"SGD", "ASGD"}
"""Optimizers whose step is proportional to the gradient (units 1/S for a conductance)."""


def _classes(module, base) -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls) and issubclass(cls, base) and cls is not base and not name.startswith("_")
    }


def _lookup(kind: str, name: str, classes: dict[str, type], unsupported: dict[str, str]) -> type:
    by_lower = {n.lower(): n for n in classes}
    key = name.lower().replace("-", "").replace("_", "")
    # Accept "onecycle" for OneCycleLR, "step" for StepLR and so on.
    match = by_lower.get(key) or by_lower.get(key + "lr")
    if match is None:
        choices = ", ".join(sorted(n for n in classes if n not in unsupported))
        raise ValueError(f"{kind} {name!r} is not in torch ({choices})")
    if match in unsupported:
        raise ValueError(f"{kind} {match} is not supported: {unsupported[match]}")
    return classes[match]


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` class called ``name`` (case-insensitive)."""
    return _lookup("optimizer", name, _classes(torch.optim, torch.optim.Optimizer), _UNSUPPORTED_OPTIMIZERS)


def _schedule_class(name: str) -> type:
    sched = torch.optim.lr_scheduler
    return _lookup("schedule", name, _classes(sched, sched.LRScheduler), _UNSUPPORTED_SCHEDULES)


def _check_options(cls: type, options: dict, reserved: dict[str, str]) -> None:
    parameters = inspect.signature(cls.__init__).parameters
    accepted = {n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}
    accepted -= {"self", "params", "optimizer", *reserved}
    for key in options:
        if key in reserved:
            raise ValueError(f"{key!r}: " + reserved[key].format(key=key))
        if key not in accepted:
            raise ValueError(f"{key!r}: {cls.__name__} takes no such argument ({', '.join(sorted(accepted))})")


def check_optimizer_options(name: str, options: dict) -> None:
    """Refuse an option the optimizer's constructor does not take or that has its own key."""
    cls = optimizer_class(name)
    reserved = {"lr": _OWN_KEY, "weight_decay": _OWN_KEY}
    if cls is torch.optim.SGD:
        reserved["momentum"] = _OWN_KEY
    _check_options(cls, options, reserved)


def check_schedule_name(name: str) -> None:
    """Refuse a schedule that is neither ``none``, ``cosine`` nor a supported torch scheduler."""
    if name.lower() not in {"none", "cosine"}:
        _schedule_class(name)


def check_schedule_options(name: str, options: dict) -> None:
    """Refuse an option the scheduler's constructor does not take or that the run sets itself."""
    if name.lower() in {"none", "cosine"}:
        if options:
            raise ValueError(f"schedule {name!r} takes no options (name a torch scheduler, e.g. steplr, for that)")
        return
    reserved = {
        "eta_min": "an absolute rate would apply to every parameter group alike (conductances are in siemens)",
        "last_epoch": "continue a run with --resume instead",
    }
    for key in ("max_lr", "total_steps", "epochs", "steps_per_epoch"):
        reserved[key] = "set from train.lr and the run's length"
    cls = _schedule_class(name)
    _check_options(cls, options, reserved)
    _check_schedule_values(cls, options)
    # What only the constructor or the first steps find (torch's own checks), on a throw-away optimizer.
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = build_schedule(name, optimizer, 10, options)
    try:
        for _ in range(3):
            optimizer.step()
            schedule.step()
    except (ValueError, ZeroDivisionError, TypeError, RuntimeError) as exc:
        raise ValueError(f"train.schedule {cls.__name__} fails at its first steps with {options}: {exc}") from None


def _is_count(value, least: int) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and float(value).is_integer() and value >= least


def _check_schedule_values(cls: type, options: dict) -> None:
    for key, least in _COUNTS.items():
        if key in options and not _is_count(options[key], least):
            raise ValueError(f"{key}: must be an integer >= {least} (periods count batches), got {options[key]!r}")
    if "milestones" in options:
        milestones = options["milestones"]
        if (
            not isinstance(milestones, list)
            or not milestones
            or not all(_is_count(m, 1) for m in milestones)
            or sorted(milestones) != milestones
            or len(set(milestones)) != len(milestones)
        ):
            raise ValueError(f"milestones: must be increasing positive integers (batches), got {milestones!r}")
    if cls.__name__ in _DECAYS and "gamma" in options:
        gamma = options["gamma"]
        if isinstance(gamma, bool | list) or not 0 < gamma <= 1:
            raise ValueError(f"gamma: must be in (0, 1] (the factor the rate decays by), got {gamma!r}")


def _schedule_kwargs(options: dict) -> dict:
    """``options`` as the constructor takes them: counts as ints (TOML floats such as 500.0 pass
    validation as numbers), other lists as tuples."""
    out = {}
    for key, value in options.items():
        if key in _COUNTS and not isinstance(value, bool):
            value = int(value)
        elif key == "milestones" and isinstance(value, list):
            value = [int(v) for v in value]
        elif isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def schedule_spans_run(name: str) -> bool:
    """Whether the schedule is laid out over the run's length (so the epoch count cannot change)."""
    if name.lower() in {"none", "cosine"}:
        return name.lower() == "cosine"
    return _schedule_class(name) is torch.optim.lr_scheduler.OneCycleLR


def analog_scale(name: str, device_range_S: float) -> float:
    """Default factor from ``lr`` to the analog learning rate (see ``TrainConfig.lr``)."""
    return device_range_S**2 if optimizer_class(name).__name__ in _GRADIENT_SCALED else device_range_S


def build_optimizer(name: str, groups: list[dict], lr: float, momentum: float, options: dict) -> torch.optim.Optimizer:
    """The optimizer over parameter ``groups`` (each with its own ``lr`` and ``weight_decay``)."""
    cls = optimizer_class(name)
    kwargs = dict(options)
    if cls is torch.optim.SGD:
        kwargs["momentum"] = momentum
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return cls(groups, lr=lr, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"train.optimizer {cls.__name__} refused its options {options}: {exc}") from None


def build_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int, options: dict):
    """The schedule stepped once per batch over ``total_steps`` batches (``None`` for ``none``)."""
    if name.lower() == "none":
        return None
    if name.lower() == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    cls = _schedule_class(name)
    kwargs = _schedule_kwargs(options)
    if cls is torch.optim.lr_scheduler.OneCycleLR:
        kwargs["total_steps"] = max(1, total_steps)
        kwargs["max_lr"] = [g["lr"] for g in optimizer.param_groups]  # each group peaks at its own rate
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise ValueError(f"train.schedule {cls.__name__} refused its options {options}: {exc}") from None
