"""Device names are checked before anything loads (issue 13: `--device cuda:7` without CUDA)."""

from __future__ import annotations

import pytest
import torch

from stage.devices import resolve_device
from stage.errors import StageError
from stage.model.checkpoints import load_model


def test_auto_and_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(" CPU ") == "cpu"


@pytest.mark.parametrize("name", ["gpu0", "cuda:x", "tpu", ""])
def test_unknown_names_are_one_line_errors(name):
    with pytest.raises(StageError, match="device") as e:
        resolve_device(name)
    assert "\n" not in str(e.value)


def test_a_gpu_that_is_not_there():
    index = torch.cuda.device_count() if torch.cuda.is_available() else 7
    with pytest.raises(StageError, match="CUDA"):
        resolve_device(f"cuda:{index}")


def test_load_model_checks_the_device_first():
    with pytest.raises(StageError, match="device"):
        load_model("tiny", device="gpu0")
