"""Device names from users (`--device`, studio and eval configs), checked before anything loads.

    resolve_device("auto")    -> "cuda" when a CUDA GPU is visible, else "cpu"
    resolve_device("cuda:7")  -> StageError on a machine without an eighth GPU (one line, no traceback)
"""

from __future__ import annotations

from stage.errors import StageError

HINT = "use cpu, cuda, cuda:N, mps or auto"


def resolve_device(device: str | None = "auto") -> str:
    """A validated torch device string. None and "auto" pick cuda when available, else cpu."""
    import torch

    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise StageError(f"unknown device {device!r}; {HINT}") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StageError(f"device {name!r}: this machine has no usable CUDA GPU; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise StageError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
        return name
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise StageError(f"device {name!r}: MPS is not available on this machine; use --device cpu")
        return name
    raise StageError(f"device {name!r} is not supported; {HINT}")
