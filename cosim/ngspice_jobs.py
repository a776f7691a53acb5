"""ngspice checks as cluster jobs: test samples in chunks, gradients one (method, beta) per task.

The model travels as a :class:`ModelState`, its configuration and its ``state_dict`` (tensors,
scattered to the workers once); every task builds the model again from them and solves its analog
blocks with ngspice in one ngspice process of its own (:class:`~analog.solvers.NgspiceSolver` with
one worker, closed when the task ends). The samples are cut at the ngspice solver's ``max_batch``
boundaries counted from the first sample, where the solver cuts a batch in one process, so every
``.dc`` sweep is the same deck as there and the outputs are the same numbers: the same predictions
and accuracy. Two cases can differ in the last bits: digital layers whose BLAS kernel depends on
the batch size, and read noise, which each task draws afresh.

Each finished task is one progress line (``say``); a task that fails cancels the others and its
error is raised here (a :class:`~analog.solvers.base.SolverError` as in one process).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from analog.operating_point import operating_point
from analog.solvers import FastSolver
from cosim.build import build_model, build_solver
from cosim.cluster import check_worker
from cosim.config import RunConfig, SolverConfig, parse_config
from cosim.gradcheck import method_gradients
from cosim.losses import make_loss
from cosim.model import FFEBM

__all__ = ["ModelState", "spread_gradients", "spread_outputs"]


@dataclass(frozen=True)
class ModelState:
    """What rebuilds a model in a worker: ``config`` (a :class:`RunConfig` as a dict), ``state``
    (its ``state_dict``), the ``input_shape`` of one sample and ``n_classes``; ``float64``: the
    float64 CPU copy ngspice validates (:func:`cosim.evaluate.reference_copy`), else the model's
    own dtype (gradient checks)."""

    config: dict
    state: dict[str, torch.Tensor]
    input_shape: tuple[int, ...]
    n_classes: int | None = None
    float64: bool = True

    @classmethod
    def of(
        cls, model: FFEBM, config: RunConfig, input_shape, n_classes: int | None = None, float64: bool = True
    ) -> ModelState:
        # As :func:`cosim.evaluate.reference_copy` casts: every floating tensor, nothing else.
        state = {
            k: v.detach().to("cpu", torch.float64 if float64 and v.is_floating_point() else v.dtype).clone()
            for k, v in model.state_dict().items()
        }
        data = config.model_dump(mode="json")
        # The model does not depend on [data]; left out, the workers do not check the data file again.
        del data["data"]
        return cls(data, state, tuple(input_shape), n_classes, float64)

    def build(self) -> FFEBM:
        """The model, with the fast solver (set the task's solver on it)."""
        config = parse_config(self.config, "the configuration sent to a Dask worker")
        model = build_model(config, self.input_shape, solver=FastSolver(), n_classes=self.n_classes)
        if self.float64:
            model = model.to(device="cpu", dtype=torch.float64)
        model.load_state_dict(self.state)
        return model


def _one_process(solver: SolverConfig) -> SolverConfig:
    return solver.model_copy(update={"workers": 1})


@torch.no_grad()
def solve_chunk(model: ModelState, x: torch.Tensor, solver: SolverConfig, capture: bool) -> tuple:
    """Task: the outputs of ``model`` on ``x`` with every analog block solved by ngspice, and (with
    ``capture``) the source voltages each analog block received, by block name."""
    torch.set_num_threads(1)
    check_worker()
    start = time.perf_counter()
    reference = model.build()
    reference.eval()
    captured: dict[str, torch.Tensor] = {}

    def grab(module, args) -> None:  # a pre-hook that returns nothing leaves the input as it is
        captured[module.name] = module.spec.source_voltages(args[0].flatten(1))

    hooks = [b.register_forward_pre_hook(grab) for b in reference.analog_blocks()] if capture else []
    dtype = next(reference.parameters()).dtype
    with build_solver(_one_process(solver), "ngspice") as ngspice:
        reference.set_solver(ngspice)
        try:
            out = reference(x.to(dtype))
        finally:
            for hook in hooks:
                hook.remove()
    return out, captured, time.perf_counter() - start


@torch.no_grad()
def solve_operating_point(model: ModelState, index: int, source_V: torch.Tensor, solver: SolverConfig) -> dict:
    """Task: :func:`analog.operating_point.operating_point` of analog block ``index`` on ``source_V``
    (in ngspice), with the block's name."""
    torch.set_num_threads(1)
    check_worker()
    block = model.build().analog_blocks()[index]
    with build_solver(_one_process(solver), "ngspice") as ngspice:
        circuit = block.circuit()
        return {"name": block.name, **operating_point(circuit, source_V, ngspice.solve(circuit, source_V))}


def _chunks(n: int, solver: SolverConfig) -> list[tuple[int, int]]:
    with build_solver(solver, "ngspice") as ngspice:  # starts no process: only its chunk size is read
        size = ngspice.max_batch
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _gather(client, futures: dict, on_done: Callable) -> None:
    """``on_done(key, result)`` for each future of ``{future: key}`` as it finishes (it may add
    futures to ``futures``); the first error cancels the rest and is raised."""
    from distributed import as_completed

    pending = as_completed(list(futures))
    try:
        for future in pending:
            for added in on_done(futures[future], future.result()) or ():
                pending.add(added)
    except BaseException:
        client.cancel(list(futures))
        raise


def spread_outputs(
    client,
    model: ModelState,
    x: torch.Tensor,
    solver: SolverConfig,
    say: Callable[[str], None] = lambda _: None,
    operating_points: int = 0,
) -> tuple[torch.Tensor, list[dict]]:
    """The outputs of ``model`` on every sample of ``x`` (shape ``[n, n_classes]``) with its analog
    blocks in ngspice, one chunk per task on ``client``'s cluster; and, when ``operating_points`` > 0,
    the operating point (:func:`solve_operating_point`) of each analog block on the first
    ``operating_points`` samples, in block order (else an empty list)."""
    chunks = _chunks(len(x), solver)
    shared = client.scatter(model, broadcast=False)
    futures = {}
    for k, (start, stop) in enumerate(chunks):
        capture = start < operating_points
        # A clone: a pickled slice carries its whole storage (all of x).
        future = client.submit(solve_chunk, shared, x[start:stop].clone(), solver, capture, pure=False)
        futures[future] = ("chunk", k)
    outputs: dict[int, torch.Tensor] = {}
    captured: dict[int, dict[str, torch.Tensor]] = {}
    ops: dict[int, dict] = {}
    n_capture = sum(start < operating_points for start, _ in chunks)
    began = time.perf_counter()

    def done(key, result):
        kind, k = key
        if kind == "op":
            ops[k] = result
            return ()
        out, grabbed, seconds = result
        outputs[k] = out
        start, stop = chunks[k]
        say(
            f"ngspice: chunk {len(outputs)}/{len(chunks)} (samples {start}..{stop - 1}) in {seconds:.1f} s, "
            f"{time.perf_counter() - began:.1f} s elapsed"
        )
        if grabbed:
            captured[k] = grabbed
        if not grabbed or len(captured) < n_capture:
            return ()
        added = []
        for index, name in enumerate(captured[0]):
            source_V = torch.cat([captured[j][name] for j in sorted(captured)])[:operating_points]
            future = client.submit(solve_operating_point, shared, index, source_V, solver, pure=False)
            futures[future] = ("op", index)
            added.append(future)
        return added

    _gather(client, futures, done)
    out = torch.cat([outputs[k] for k in range(len(chunks))])
    return out, [ops[k] for k in sorted(ops)]


def gradients_task(model: ModelState, loss: str, x: torch.Tensor, y: torch.Tensor, run: tuple, solver: SolverConfig):
    """Task: :func:`cosim.gradcheck.method_gradients` of one ``(method, beta)`` run, in ngspice."""
    torch.set_num_threads(1)
    check_worker()
    start = time.perf_counter()
    built = model.build()
    with build_solver(_one_process(solver), "ngspice") as ngspice:
        built.set_solver(ngspice)
        grads = method_gradients(built, make_loss(loss, y, model.n_classes), x, *run)
    return grads, time.perf_counter() - start


def spread_gradients(
    client,
    model: ModelState,
    loss: str,
    x: torch.Tensor,
    y: torch.Tensor,
    solver: SolverConfig,
    say: Callable[[str], None] = lambda _: None,
) -> Callable[[Sequence[tuple[str, float | None]]], list[dict]]:
    """The ``gradients`` strategy of :func:`cosim.gradcheck.gradcheck` that computes each
    ``(method, beta)`` run as one task on ``client``'s cluster, ngspice solving every phase; the
    loss is ``loss`` (a ``train.loss`` name) on labels ``y``."""

    def compute(runs: Sequence[tuple[str, float | None]]) -> list[dict]:
        # Clones: a pickled slice of the training set would carry all of it.
        shared, samples, labels = client.scatter([model, x.clone(), y.clone()], broadcast=False)
        futures = {
            client.submit(gradients_task, shared, loss, samples, labels, tuple(run), solver, pure=False): k
            for k, run in enumerate(runs)
        }
        grads: dict[int, dict] = {}

        def done(k, result):
            grads[k], seconds = result
            method, beta = runs[k]
            label = method if beta is None else f"{method} beta={beta:g}"
            say(f"gradcheck: {label} done ({len(grads)}/{len(runs)}, {seconds:.1f} s)")

        _gather(client, futures, done)
        return [grads[k] for k in range(len(runs))]

    return compute
