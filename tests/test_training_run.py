"""The one training loop (macs_cli.training.run.TrainingRun.run) on a toy trainer whose loss is
known: a single weight w, objective w * x per micro-batch with x drawn from the step's generator,
plain SGD, so every step's update and logged loss can be computed by hand."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import pytest
import torch

from macs_cli.errors import ConfigError
from macs_cli.training.config import TrainingConfig
from macs_cli.training.run import TrainingRun


@dataclass
class ToyOptim:
    lr: float = 0.5
    grad_accum: int = 1
    clip_grad: float = 0.0
    clip_mode: str = "norm"


@dataclass
class ToyTrain:
    steps: int = 6
    seed: int = 0
    precision: str = "fp32"
    max_minutes: float | None = None
    diverge_at: int = 0          # the step whose objective is NaN (0: none)


@dataclass
class Every:
    every: int = 1


@dataclass
class ToyConfig(TrainingConfig):
    optim: ToyOptim = field(default_factory=ToyOptim)
    train: ToyTrain = field(default_factory=ToyTrain)
    checkpoint: Every = field(default_factory=lambda: Every(100))
    log: Every = field(default_factory=Every)

    @staticmethod
    def validate(cfg):
        if cfg["optim"]["grad_accum"] < 1:
            raise ConfigError("optim.grad_accum must be >= 1")


class Toy(TrainingRun):
    config_type = ToyConfig
    label = "toy"
    config_sections = frozenset(ToyConfig.defaults())

    def __init__(self, cfg, run_dir):
        super().__init__(cfg, run_dir, "cpu", None, False)
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.config.optim.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.total_steps = self.config.train.steps
        self.draws: list[tuple[int, int, float]] = []   # (step, micro-batch, x)
        self.loaded = False

    def has_data(self):
        return self.loaded

    def load_data(self):
        self.loaded = True

    def train_step(self, gen, micro):
        x = float(torch.rand((), generator=gen, device=gen.device)) + 1.0
        self.draws.append((self.step, micro, x))
        objective = self.model.weight.sum() * x
        if self.step + 1 == self.config.train.diverge_at:
            objective = objective * float("nan")
        return objective, objective.detach().reshape(1)

    def save(self):
        self.save_state({"model": self.model.state_dict()})

    def resume(self):
        return self.load_state(lambda state: self.model.load_state_dict(state["model"]))

    @property
    def w(self) -> float:
        return float(self.model.weight.detach())


def toy_cfg(**sections):
    cfg = ToyConfig.defaults()
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_accumulation_averages_micro_batches_and_logs_the_mean(tmp_path):
    toy = Toy(toy_cfg(optim={"grad_accum": 3}, train={"steps": 4}), tmp_path / "run")
    result = toy.run()
    assert result == {"step": 4, "run_dir": str(tmp_path / "run")}
    assert [(s, m) for s, m, _ in toy.draws] == [(s, m) for s in range(4) for m in range(3)]
    # SGD on w * x: each step moves w by -lr * mean(x over its micro-batches)
    w, expected_loss = 0.0, []
    for step in range(4):
        xs = [x for s, _, x in toy.draws if s == step]
        expected_loss.append(w * sum(xs) / 3)
        w -= 0.5 * sum(xs) / 3
    assert toy.w == pytest.approx(w, rel=1e-6)
    rows = metrics(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == pytest.approx(expected_loss, rel=1e-5, abs=1e-7)
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and (tmp_path / "run" / "config.yaml").is_file()


def test_gradient_clipping_by_value_applies_at_every_step(tmp_path):
    # x >= 1, so the gradient is >= 1 and clipped to 0.01: w falls by lr * 0.01 each step
    toy = Toy(toy_cfg(optim={"clip_grad": 0.01, "clip_mode": "value"}, train={"steps": 5}), tmp_path / "run")
    toy.run()
    assert toy.w == pytest.approx(-5 * 0.5 * 0.01, rel=1e-5)


def test_a_non_finite_loss_stops_the_run_with_one_error(tmp_path):
    toy = Toy(toy_cfg(train={"steps": 6, "diverge_at": 3}, checkpoint={"every": 1}), tmp_path / "run")
    with pytest.raises(ConfigError, match="training diverged at step 3 .*lower optim.lr"):
        toy.run()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2                       # the diverged step is never saved
    assert [int(r["step"]) for r in metrics(tmp_path / "run")] == [1, 2]


def test_resume_continues_the_step_count_and_equals_an_unbroken_run(tmp_path):
    cfg = toy_cfg(optim={"grad_accum": 2}, train={"steps": 6})
    full = Toy(cfg, tmp_path / "full")
    full.run()
    broken = Toy(cfg, tmp_path / "broken")
    assert broken.run(stop_after=2)["step"] == 2   # saves on stopping, as an interrupted run would have
    resumed = Toy(cfg, tmp_path / "broken")
    assert resumed.run(resume=True)["step"] == 6
    assert [s for s, _, _ in resumed.draws] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert resumed.draws == full.draws[4:]          # the same micro-batches as the unbroken run
    assert resumed.w == full.w
    assert [int(r["step"]) for r in metrics(tmp_path / "broken")] == list(range(1, 7))
    assert [r["loss"] for r in metrics(tmp_path / "broken")] == [r["loss"] for r in metrics(tmp_path / "full")]


def test_the_typed_config_is_validated_and_read_by_name(tmp_path):
    toy = Toy(toy_cfg(optim={"grad_accum": 2}), tmp_path / "run")
    assert toy.config.optim.grad_accum == 2 and toy.config.checkpoint.every == 100
    with pytest.raises(ConfigError, match="grad_accum"):
        Toy(toy_cfg(optim={"grad_accum": 0}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="unknown config key 'optim.nope'"):
        ToyConfig.from_dict({"optim": {"nope": 1}})


def test_both_trainers_configs_are_typed_views_of_their_defaults():
    from macs_cli.training.config import (DEFAULTS, GEN_DEFAULTS, AdapterTrainingConfig, SeparatorTrainingConfig,
                                          load_config)

    sep = SeparatorTrainingConfig.from_dict(load_config(None, ["data.train=x", "optim.grad_accum=4"]))
    assert sep.optim.grad_accum == 4 and sep.data.train == "x" and sep.optim.clip_mode == "norm"
    assert sep.to_dict()["optim"]["grad_accum"] == 4 and list(sep.to_dict()) == list(DEFAULTS)
    gen = AdapterTrainingConfig.from_dict(GEN_DEFAULTS, validate=False)
    assert gen.optim.clip_mode == "value" and gen.checkpoint.every == 500 and gen.sample.every == 500
    with pytest.raises(ConfigError, match="data.train is required"):
        AdapterTrainingConfig.from_dict(GEN_DEFAULTS)
