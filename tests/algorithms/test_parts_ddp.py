"""The stateful parts under DDP: two real gloo processes on the CPU, each feeding its own half of every batch,
end with the state of one process fed the whole batches, on both ranks, and give the same weights for their
halves. `gather_all` is what makes it so."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_train.algorithms.alignment import DistributionAlignment, RatioAlignment
from ssl_train.algorithms.distributed import gather_all
from ssl_train.algorithms.masking import (
    CurriculumThreshold,
    RelativeThreshold,
    SelfAdaptiveThreshold,
    TruncatedGaussian,
)

WORLD, POOL, CLASSES, STEPS, BATCH = 2, 32, 4, 3, 16


def fresh_parts() -> dict:
    """Every part that reads the global batch, alike on every process (momenta low enough for the state to move)."""
    curriculum = CurriculumThreshold(CLASSES, threshold=0.6, warmup=False)
    curriculum.bind(SimpleNamespace(unlabeled=range(POOL)))
    return {"curriculum": curriculum, "self_adaptive": SelfAdaptiveThreshold(CLASSES, momentum=0.5),
            "truncated_gaussian": TruncatedGaussian(CLASSES, momentum=0.9),
            "relative": RelativeThreshold(CLASSES, threshold=0.8),
            "sinkhorn": DistributionAlignment(CLASSES, window=24),
            "ratio": RatioAlignment(CLASSES, momentum=0.9, target="predictions")}


def feed(rank: int, world: int) -> tuple[dict, dict]:
    """(outputs per part and step, state per part) after `STEPS` global batches, this rank taking its slice of
    each (a training loader gives every rank its own samples; every rank sees the same generator here)."""
    g = torch.Generator().manual_seed(0)
    parts, outputs = fresh_parts(), {}
    for _ in range(STEPS):
        idx = torch.randperm(POOL, generator=g)[:BATCH]
        probs, probs_lb = ((3 * torch.randn(n, CLASSES, generator=g)).softmax(-1) for n in (BATCH, BATCH // 2))
        mine = lambda t: t.chunk(world)[rank]  # noqa: E731
        for name, part in parts.items():
            args = {"probs_lb": mine(probs_lb)} | ({} if name in ("sinkhorn", "ratio") else {"idx": mine(idx)})
            outputs.setdefault(name, []).append(part(mine(probs), **args))
    return outputs, {name: part.state_dict() for name, part in parts.items()}


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        gathered = {"float": gather_all(torch.full((2, 3), float(rank))),
                    "long": gather_all(torch.arange(3) + 10 * rank)}
        outputs, states = feed(rank, WORLD)
        torch.save({"gathered": gathered, "outputs": outputs, "states": states}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_hold_the_single_process_state(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    for got in ranks:  # gather_all: every rank's tensor, in rank order, on every rank
        assert torch.equal(got["gathered"]["float"], torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3] * 2))
        assert got["gathered"]["long"].tolist() == [0, 1, 2, 10, 11, 12]
    one = torch.ones(3)
    assert gather_all(one) is one  # one process: the tensor itself

    outputs, states = feed(0, 1)
    for name, state in states.items():
        for got in ranks:
            assert state.keys() == got["states"][name].keys()
            for key, value in state.items():
                assert torch.equal(got["states"][name][key], value), (name, key)
        for step, whole in enumerate(outputs[name]):
            halves = torch.cat([got["outputs"][name][step] for got in ranks])
            torch.testing.assert_close(halves, whole, rtol=0, atol=0, msg=f"{name}, step {step}")
    # The comparison saw state that moved and masks that select some samples and not others.
    assert (states["curriculum"]["selected"] >= 0).any() and states["curriculum"]["learning_effect"].max() > 0
    assert int(states["sinkhorn"]["seen"]) == STEPS * BATCH and states["sinkhorn"]["log_weights"].abs().max() > 0
    for name in ("curriculum", "self_adaptive", "relative"):
        assert 0 < torch.cat(outputs[name]).mean() < 1, name
