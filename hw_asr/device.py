"""Which device a process computes on."""

import torch

from hw_asr.config import ConfigError


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` (this rank's GPU) or
    ``cuda:N``; a device that torch cannot use here is a ConfigError before anything is built."""
    if name in (None, "auto"):
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}, but torch {torch.__version__} sees no CUDA device (a CPU build of "
                f"torch, or no GPU or driver visible); use auto or cpu"
            )
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device
