"""What the algorithm tests share."""

import pytest
import torch


@pytest.fixture
def never_waits():
    """`never_waits(step)` runs `step` twice: the first call may allocate and synchronize, the second must not
    make the host wait for the device (CUDA's sync debug mode turns any such wait into an error)."""

    def check(step) -> None:
        step()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    return check


@pytest.fixture
def to_cuda():
    """`to_cuda(batch)`: a training batch (nested dicts of tensors) moved to the GPU."""

    def move(batch: dict) -> dict:
        return {k: move(v) if isinstance(v, dict) else v.cuda() for k, v in batch.items()}

    return move
