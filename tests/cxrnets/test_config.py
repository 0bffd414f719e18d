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
    ({"momentum": float("nan")}, r"^option momentum must be finite and >= 0, got nan$"),
    ({"weight_decay": float("inf")}, r"^option weight_decay must be finite and >= 0, got inf$"),
    ({"dataset": "covid-chestxray", "balance_classes": False},
     r"--no-balance: covid-chestxray is multi-label, trained with a per-label loss that weights no class"),
    ({"epochs": 0}, "option epochs"),
    ({"image_size": 0}, "option image_size"),
    ({"optimizer": "rmsprop"}, r"unknown optimizer 'rmsprop'.*adam, sgd"),
    ({"model": "resnet18"}, r"unknown model 'resnet18'.*alexnet"),
    ({"dataset": "imagenet"}, r"unknown dataset 'imagenet'"),
    ({"model": "alexnet", "image_size": 32}, r"--image-size 32 is too small for model 'alexnet'.*63"),
    ({"model": "vgg11", "image_size": 31}, r"too small for model 'vgg11'"),
    ({"momentum": -0.5}, r"^option momentum must be finite and >= 0, got -0\.5$"),
    ({"momentum": 1.0}, r"option momentum must be below 1 \(SGD's velocity would never decay\), got 1\.0"),
    ({"device": "tpu"}, r"option device 'tpu': choose auto \(CUDA if present, else CPU\), cpu, cuda or cuda:N"),
    ({"device": "cuda:first"}, r"option device 'cuda:first'"),
    ({"weight_decay": -1e-4}, r"^option weight_decay must be finite and >= 0, got -0\.0001$"),
    ({"seed": -1}, r"option seed -1: a seed is a whole number from 0 to 2147483647"),
    ({"seed": 2**32}, r"option seed 4294967296"),
    ({"momentum": 0.5}, r"option momentum 0\.5 with optimizer adam: momentum is SGD's, adam would ignore it; drop "
                        r"momentum, or choose optimizer sgd"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, r"option val_fraction 0\.5 and test_fraction 0\.5: each must lie "
                                                  r"between 0 and 1, and together leave patients to train on"),
    ({"val_fraction": 0.0}, r"option val_fraction 0 and test_fraction 0\.15"),
    ({"test_fraction": float("nan")}, r"option val_fraction 0\.15 and test_fraction nan"),
])
def test_validate_errors(changes: dict, message: str) -> None:
    with pytest.raises(CxrError, match=message):
        TrainConfig(**changes).validate()


def test_momentum_is_sgds_yet_an_adam_run_may_carry_its_default() -> None:
    """A study's Adam trial has no momentum in its config: TrainConfig's default, which it does not use."""
    TrainConfig(optimizer="adam").validate()
    TrainConfig(optimizer="sgd", momentum=0.5).validate()
    TrainConfig.from_dict({"optimizer": "adam", "lr": 1e-4}).validate()


@pytest.mark.parametrize("changes, message", [
    ({"lr": 0}, "--lr must be a positive number, got 0"),
    ({"batch_size": 1}, "--batch-size must be at least 2"),
    ({"image_size": -4}, "--image-size must be a positive integer"),
    ({"momentum": float("nan")}, r"--momentum must be finite and >= 0, got nan$"),
    ({"weight_decay": -1.0}, r"--weight-decay must be finite and >= 0, got -1\.0$"),  # not --momentum's fault
    ({"weight_decay": float("nan")}, r"--weight-decay must be finite and >= 0, got nan$"),
    ({"optimizer": "adam", "momentum": 0.0}, "--momentum 0 with --optimizer adam: momentum is SGD's"),
    ({"val_fraction": 0.9}, r"--val-fraction 0\.9 and --test-fraction 0\.15: each must lie"),
    ({"device": "tpu"}, "--device 'tpu'"),
    ({"seed": -1}, "--seed -1"),
])
def test_validate_names_the_flags_a_command_line_typed(changes: dict, message: str) -> None:
    with pytest.raises(CxrError, match=f"^{message}"):
        TrainConfig(**changes).validate(flags=True)


def test_from_dict_ignores_trial_extras() -> None:
    config = TrainConfig.from_dict({"model": "vgg11", "lr": 0.01, "trial_id": "abc", "config/extra": 1})
    assert config.model == "vgg11" and config.lr == 0.01


def test_the_train_command_answers_help_without_loading_torch() -> None:
    code = ("import sys\nfrom cxrnets.train import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'ray', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
