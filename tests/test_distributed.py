"""DistributedDataParallel on two CPU processes (gloo, loopback): the replicas stay equal."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from resmooth import ResidualSmoothingLoss, SquaredErrorLoss
from resmooth.regularization import adaptive_decay, add_weight_decay_

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_replica(rank: int, port: int, method: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same initial weights on both ranks
        model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        criterion = ResidualSmoothingLoss(total_steps=STEPS) if method == "resmooth" else SquaredErrorLoss(reduction="none")
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own samples
        local_decays = []
        for _ in range(STEPS):
            x, y = torch.randn(8, 6, generator=g) * (1 + 3 * rank), torch.randint(0, 5, (8,), generator=g)
            losses = criterion(model(x), y)
            optimizer.zero_grad()
            losses.mean().backward()
            if method == "adaptive-wd":
                local_decays.append(float(0.1 * (-torch.expm1(-losses.detach())).mean()))
                add_weight_decay_(model.parameters(), adaptive_decay(losses, 0.1, 1.0))
            optimizer.step()
            if method == "resmooth":
                criterion.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        both = [torch.empty_like(flat) for _ in range(2)]
        dist.all_gather(both, flat)
        assert torch.equal(both[0], both[1]), f"{method}: the replicas drifted apart"
        if local_decays:
            # The ranks' own decays differ: without the all-reduce the replicas would drift.
            theirs = [torch.empty(STEPS, dtype=torch.float64) for _ in range(2)]
            dist.all_gather(theirs, torch.tensor(local_decays, dtype=torch.float64))
            assert not torch.equal(theirs[0], theirs[1])
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("method", ["resmooth", "adaptive-wd"])
def test_replicas_stay_equal_under_ddp(method):
    mp.spawn(_train_replica, args=(_free_port(), method), nprocs=2, join=True)
