"""`cosim train` end to end: outputs of a run, exact resume after SIGKILL, refusals before writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosim.cli import main
from cosim.metrics import read_metrics
from cosim.run_lock import LOCK_FILE
from cosim.runs import ARTIFACTS
from tests.conftest import ngspice_available

ROOT = Path(__file__).resolve().parent.parent

TINY = """
name = "tiny"
seed = 3

[data]
train_subset = {train}
test_subset = 64

[[model.blocks]]
type = "analog"
sizes = [64, 16, 10]
input_gain_V = 4.0

[[model.blocks]]
type = "scale"
factor = 20.0

[train]
epochs = {epochs}
batch_size = 16
lr = 0.01
beta = 0.1
ngspice_eval_samples = {ngspice}
"""

SUMMARY_KEYS = {
    "test_accuracy",
    "epochs",
    "seconds_per_epoch",
    "ngspice_test_accuracy",
    "ngspice_samples",
    "fast_test_accuracy_same_samples",
}


def tiny_config(tmp_path: Path, epochs: int = 2, train: int = 96, ngspice: int = 0, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(epochs=epochs, train=train, ngspice=ngspice), encoding="utf-8")
    return path


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cosim.cli", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_epochs_write_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config(tmp_path)), "--out", str(out), "--no-ngspice"]) == 0
    # The lock file stays: deleting it would let a second writer lock a new file while a third holds the old one.
    assert {p.name for p in out.iterdir()} == {*ARTIFACTS, LOCK_FILE}
    rows = read_metrics(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert 0 <= row["train_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert row["loss"] > 0 and row["seconds"] > 0
        for phase in ("free", "positive", "negative"):
            assert row[f"analog0.{phase}.iterations_mean"] >= 1
            assert row[f"analog0.{phase}.residual_A_max"] < 1e-9
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["metrics"]) == 2
    assert json.loads(state["config"])["name"] == "tiny"
    for plot in ("curves.png", "solver_iterations.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["epochs"] == 2 and summary["test_accuracy"] == rows[-1]["test_accuracy"]
    assert summary["ngspice_samples"] == 0 and summary["ngspice_test_accuracy"] is None
    printed = capsys.readouterr()
    assert str(out / "summary.json") in printed.out and str(out / "curves.png") in printed.out
    assert "epoch 2/2" in printed.err


def test_learning_happens(tmp_path):
    out = tmp_path / "run"
    config = tiny_config(tmp_path, epochs=3, train=320)
    assert main(["train", "--config", str(config), "--out", str(out), "--no-ngspice"]) == 0
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["test_accuracy"] > 0.5


# Runs `cosim train` and SIGKILLs it from inside after batch KILL_AT of the run (mid-epoch), so the
# kill lands at the same point however fast or loaded the machine is.
_KILLED_TRAIN = """
import os, signal, sys
import cosim.metrics
add, calls = cosim.metrics.SolverTally.add, [0]
def counting_add(self, stats):
    add(self, stats)
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
cosim.metrics.SolverTally.add = counting_add
from cosim.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    config = tiny_config(tmp_path, epochs=3, train=384)  # 24 batches per epoch
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = cli("--config", str(config), "--out", str(straight), "--no-ngspice")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "KILL_AT": str(24 + 7)}
    victim = subprocess.run(
        [sys.executable, "-c", _KILLED_TRAIN, "train", "--config", str(config), "--out", str(killed), "--no-ngspice"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    metrics = killed / "metrics.csv"
    done = len(read_metrics(metrics))
    assert done == 1, "killed in epoch 2: exactly one epoch is on disk"
    resumed = cli("--resume", str(killed), "--no-ngspice")
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert f"from epoch {done + 1}" in err
    _, err = reference.communicate(timeout=60)
    assert reference.returncode == 0, err
    a, b = read_metrics(straight / "metrics.csv"), read_metrics(metrics)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    assert without_time(a) == without_time(b)
    sa = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(killed / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_invalid_config_exits_2_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(tiny_config(tmp_path).read_text().replace("lr = 0.01", "lr = -0.01"), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "Traceback" not in err
    assert not out.exists()


def test_invalid_config_exit_code_of_the_command(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(tiny_config(tmp_path).read_text().replace("sizes = [64, 16, 10]", "sizes = [64, 0, 10]"))
    out = tmp_path / "run"
    proc = cli("--config", str(config), "--out", str(out))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "model.blocks[0].sizes[1]" in err
    assert not out.exists()


def test_unknown_key_is_an_error(tmp_path, capsys):
    config = tmp_path / "typo.toml"
    config.write_text(tiny_config(tmp_path).read_text().replace("batch_size", "batchsize"), encoding="utf-8")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.batchsize" in err and "unknown key" in err
    assert not (tmp_path / "run").exists()


def test_model_that_does_not_chain_is_refused_before_writing(tmp_path, capsys):
    text = tiny_config(tmp_path).read_text().replace("sizes = [64, 16, 10]", "sizes = [50, 16, 10]")
    config = tmp_path / "chain.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "model.blocks[0]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_non_empty_run_dir_needs_resume_or_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["train", "--config", str(tiny_config(tmp_path)), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config(tmp_path)), "--out", str(out), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--config", str(tiny_config(tmp_path)), "--out", str(out), "--device", "cuda", "--no-ngspice"]
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["device"].startswith("cuda")


@pytest.mark.ngspice
def test_ngspice_validation_after_training(tmp_path):
    reason = ngspice_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config(tmp_path, epochs=1, ngspice=24)), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ngspice_samples"] == 24
    assert summary["ngspice_test_accuracy"] is not None
    assert abs(summary["ngspice_test_accuracy"] - summary["fast_test_accuracy_same_samples"]) <= 1 / 24 + 1e-12
    # digits has 10 classes: the check reports top-5 of both solvers on the same samples too.
    top5 = summary["ngspice_test_top5_accuracy"]
    assert top5 >= summary["ngspice_test_accuracy"]
    assert abs(top5 - summary["fast_test_top5_accuracy_same_samples"]) <= 1 / 24 + 1e-12


@pytest.mark.parametrize(("n_classes", "top5"), [(10, True), (5, False), (None, False)])
def test_the_ngspice_check_reports_top5_beside_top1_beyond_five_classes(tmp_path, n_classes, top5):
    from cosim.config import load_config
    from cosim.evaluate import ngspice_validation

    config = load_config(tiny_config(tmp_path))
    x, y = torch.zeros(0, 64), torch.zeros(0)
    keys = ngspice_validation(None, x, y, "cpu", torch.float64, 0, config, n_classes=n_classes)
    assert keys["ngspice_test_accuracy"] is None
    assert ("ngspice_test_top5_accuracy" in keys) is top5
    assert ("fast_test_top5_accuracy_same_samples" in keys) is top5


def test_train_config_api_returns_summary(tmp_path):
    from cosim.config import load_config
    from cosim.training import train_config

    config = load_config(tiny_config(tmp_path, epochs=1))
    summary = train_config(config)
    assert SUMMARY_KEYS <= set(summary) and summary["epochs"] == 1
    assert {"test_accuracy", "train_accuracy", "final_loss"} <= set(summary)


def test_analog_learning_rate_scale_follows_the_optimizer():
    from cosim.build import build_model, make_optimizer
    from cosim.config import parse_config

    base = {"model": {"blocks": [{"type": "analog", "sizes": [4, 3, 2]}]}}
    span = 1e-4 - 1e-6
    for optimizer, scale in (("adam", span), ("sgd", span**2)):
        config = parse_config({**base, "train": {"optimizer": optimizer, "lr": 0.5}})
        groups = make_optimizer(build_model(config, (4,)), config.train).param_groups
        assert abs(groups[-1]["lr"] - 0.5 * scale) <= 1e-12 * scale


def test_any_torch_optimizer_and_schedule_by_name(tmp_path):
    """A torch optimizer and scheduler named in the configuration drive training; the schedule
    steps once per batch (StepLR halves the rate every 3 batches: 6 batches per epoch here)."""
    text = tiny_config(tmp_path).read_text()
    text = text.replace(
        "lr = 0.01\n",
        'lr = 0.01\noptimizer = "rmsprop"\noptimizer_options = {alpha = 0.9, centered = true}\n'
        'schedule = "steplr"\nschedule_options = {step_size = 3, gamma = 0.5}\n',
    )
    config = tmp_path / "rmsprop.toml"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--no-ngspice"]) == 0
    rows = read_metrics(out / "metrics.csv")
    assert [r["lr"] for r in rows] == pytest.approx([0.01 * 0.5**2, 0.01 * 0.5**4], rel=1e-12)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["centered"] is True
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"optimizer": "adamm"}, r"train\.optimizer: optimizer 'adamm' is not in torch"),
        ({"optimizer": "lbfgs"}, r"train\.optimizer: optimizer LBFGS is not supported"),
        ({"optimizer_options": {"betaz": [0.9, 0.99]}}, r"train\.optimizer_options: 'betaz': Adam takes no such"),
        ({"optimizer": "sgd", "optimizer_options": {"momentum": 0.5}}, r"own key train\.momentum"),
        ({"schedule": "steplr", "schedule_options": {"step": 3}}, r"train\.schedule_options: 'step'"),
        ({"schedule": "cosine", "schedule_options": {"T_max": 3}}, r"takes no options"),
        ({"schedule": "cycliclr"}, r"train\.schedule: schedule CyclicLR is not supported"),
        ({"schedule": "onecycle", "schedule_options": {"max_lr": 1.0}}, r"'max_lr': set from train\.lr"),
    ],
)
def test_bad_optimizer_or_schedule_names_the_key(train, message):
    from cosim.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config({"model": {"blocks": [{"type": "analog", "sizes": [4, 3, 2]}]}, "train": train})


def test_onecycle_peaks_every_group_at_its_own_rate():
    from cosim.build import build_model, make_optimizer, make_schedule
    from cosim.config import parse_config

    config = parse_config(
        {
            "model": {
                "blocks": [
                    {"type": "linear", "in_features": 4, "out_features": 4},
                    {"type": "analog", "sizes": [4, 3, 2]},
                ]
            },
            "train": {"schedule": "onecycle", "lr": 0.1},
        }
    )
    optimizer = make_optimizer(build_model(config, (4,)), config.train)
    peaks = [g["lr"] for g in optimizer.param_groups]
    schedule = make_schedule(optimizer, config.train, 100)
    seen = [[] for _ in peaks]
    for _ in range(100):
        optimizer.step()
        schedule.step()
        for i, g in enumerate(optimizer.param_groups):
            seen[i].append(g["lr"])
    for peak, rates in zip(peaks, seen, strict=True):
        assert max(rates) == pytest.approx(peak, rel=1e-3)
        assert rates[-1] < 1e-3 * peak
