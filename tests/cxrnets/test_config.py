"""cxrnets.config: a training run's config, its defaults and its checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cxrnets.config import TrainConfig
from cxrnets.data import SAMPLE_ROOT
from cxrnets.errors import CxrError


def test_default_config_is_valid() -> None:
    config = TrainConfig()
    config.validate()
    assert config.data_root == str(SAMPLE_ROOT)


@pytest.mark.parametrize("changes, message", [
    ({"lr": 0}, "option lr must be a positive number"),
    ({"lr": -0.01}, "option lr"),
    ({"lr": float("nan")}, "option lr"),
    ({"lr": float("inf")}, "option lr"),
    ({"lr": "0.1"}, "option lr"),
    ({"batch_size": 0}, "option batch_size must be a positive integer"),
    ({"batch_size": -8}, "option batch_size"),
    ({"batch_size": 2.5}, "option batch_size"),
    ({"batch_size": 1}, r"option batch_size must be at least 2 \(a training batch of one image is skipped"),
    ({"momentum": float("nan")}, r"momentum \(nan\) and weight_decay \(0\.0\) must be finite and >= 0"),
    ({"weight_decay": float("inf")}, r"must be finite and >= 0"),
    ({"dataset": "covid-chestxray", "balance_classes": False},
     r"--no-balance: covid-chestxray is multi-label, trained with a per-label loss that weights no class"),
    ({"epochs": 0}, "option epochs"),
    ({"image_size": 0}, "option image_size"),
    ({"optimizer": "rmsprop"}, r"unknown optimizer 'rmsprop'.*adam, sgd"),
    ({"model": "resnet18"}, r"unknown model 'resnet18'.*alexnet"),
    ({"dataset": "imagenet"}, r"unknown dataset 'imagenet'"),
    ({"model": "alexnet", "image_size": 32}, r"--image-size 32 is too small for model 'alexnet'.*63"),
    ({"model": "vgg11", "image_size": 31}, r"too small for model 'vgg11'"),
    ({"momentum": -0.5}, "momentum"),
    ({"momentum": 1.0}, r"option momentum must be below 1 \(SGD's velocity would never decay\), got 1\.0"),
    ({"device": "tpu"}, r"option device 'tpu': choose auto \(CUDA if present, else CPU\), cpu, cuda or cuda:N"),
    ({"device": "cuda:first"}, r"option device 'cuda:first'"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"seed": -1}, r"option seed -1: a seed is a whole number from 0 to 2147483647"),
    ({"seed": 2**32}, r"option seed 4294967296"),
])
def test_validate_errors(changes: dict, message: str) -> None:
    with pytest.raises(CxrError, match=message):
        TrainConfig(**changes).validate()


def test_from_dict_ignores_trial_extras() -> None:
    config = TrainConfig.from_dict({"model": "vgg11", "lr": 0.01, "trial_id": "abc", "config/extra": 1})
    assert config.model == "vgg11" and config.lr == 0.01


def test_the_train_command_answers_help_without_loading_torch() -> None:
    code = ("import sys\nfrom cxrnets.train import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'ray', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
