"""Fine-tuning from imported weights (`model.init_from`, attractor/train/config.py and
trainer.py): the run starts from the paper's checkpoint exactly, trains, and bad
init_from values or shape-changing overrides are one line at config load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import attractor as at
from attractor.core.typed_config import ConfigError
from attractor.train.config import load_config
from attractor.train.trainer import Trainer

DATA = Path(__file__).resolve().parent.parent / "data" / "reference"


def config(out_dir: Path, source: Path, *extra: str):
    return load_config(
        None,
        [
            f"model.init_from={source}",
            "data.source=synthetic",
            "data.seq_len=16",
            "data.batch_size=2",
            "train.steps=2",
            "train.eval_every=0",
            "train.progress=false",
            "train.device=cpu",
            f"train.out_dir={out_dir}",
            *extra,
        ],
    )


@pytest.mark.parametrize("name", ["gpt-tiny", "attractor-tiny"])
def test_a_run_starts_from_the_imported_weights_and_trains(name, tmp_path):
    imported = at.load_pretrained(DATA / name)
    trainer = Trainer(config(tmp_path / "run", DATA / name))
    assert trainer.raw.config == imported.config
    for (key, p), q in zip(
        trainer.raw.state_dict().items(), imported.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), key
    trainer.fit()
    moved = [
        k
        for k, p in trainer.raw.state_dict().items()
        if not torch.equal(p, imported.state_dict()[k])
    ]
    assert moved  # it trained
    exported = at.load_pretrained(tmp_path / "run" / "model")
    assert exported.config == imported.config


def test_overrides_apply_over_the_imported_config(tmp_path):
    source = DATA / "attractor-tiny"
    cfg = config(tmp_path, source, "model.overrides.fixed_point.eval_solver.tol=1e-3")
    trainer = Trainer(cfg)
    assert trainer.raw.config.fixed_point.eval_solver.tol == 1e-3
    assert trainer.raw.config.fixed_point.train_solver.tol == 3e-4  # the imported one
    imported = at.load_pretrained(source).state_dict()
    assert all(torch.equal(p, imported[k]) for k, p in trainer.raw.state_dict().items())


def test_bad_init_from_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"model.init_from: .*does not exist") as err:
        config(tmp_path, tmp_path / "missing")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"model.overrides.bogus: unknown key"):
        config(tmp_path, DATA / "gpt-tiny", "model.overrides.bogus=1")


def test_a_shape_changing_override_is_named(tmp_path):
    cfg = config(tmp_path, DATA / "gpt-tiny", "model.overrides.n_layers=2")
    with pytest.raises(ValueError, match=r"drop the weight blocks\.2\.") as err:
        Trainer(cfg)
    assert "\n" not in str(err.value)
