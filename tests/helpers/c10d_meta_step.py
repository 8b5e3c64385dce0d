"""Two gloo ranks, each runs meta train steps on torch's DistributedDataParallel
(c10d) wrapped as fairseq wraps it, and writes its gradients and weights.
Usage: python c10d_meta_step.py CORPUS OUT_DIR ORDER|reptile"""
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run(rank, corpus, out_dir, order, port):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [tests, os.path.dirname(tests)]
    from fairseq.distributed import ModuleProxyWrapper
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel
    from test_meta_gradients import build

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    # Every update also measures the adaptation gain: its extra forward at θ must
    # not arm a reduction either.
    objective = ["--meta-objective", "reptile"] if order == "reptile" else []
    task, model, criterion, optimizer, episodes = build(
        corpus, k=2, order="first" if order == "reptile" else order,
        extra=["--log-adaptation-interval", "1", *objective])
    ddp = DistributedDataParallel(model)
    reductions = []

    def counting_allreduce(state, bucket):
        reductions.append(1)
        return default_hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, counting_allreduce)
    # All-reduces outside DDP's reducer (Reptile does its own, once per update).
    direct = []
    all_reduce = dist.all_reduce

    def counting_direct_allreduce(*args, **kwargs):
        direct.append(1)
        return all_reduce(*args, **kwargs)

    dist.all_reduce = counting_direct_allreduce
    wrapped = ModuleProxyWrapper(ddp)
    episodes = list(episodes)

    # How many bucket all-reduces one ordinary forward/backward makes.
    criterion(wrapped, episodes[0]["meta_train"][0])[0].backward()
    per_backward = len(reductions)
    per_update, direct_per_update = [], []
    for update in range(3):
        episode = episodes[2 * update + rank]  # each rank its own episode
        model.zero_grad()
        reductions.clear()
        direct.clear()
        task.train_step(episode, wrapped, criterion, optimizer, update_num=update)
        per_update.append(len(reductions))
        direct_per_update.append(len(direct))
        with torch.no_grad():
            for p in model.parameters():
                p -= 1e-2 * p.grad
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    state["_reductions"] = torch.tensor([per_backward, *per_update])
    state["_direct"] = torch.tensor(direct_per_update)
    torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    corpus, out_dir, order, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    mp.spawn(run, args=(corpus, out_dir, order, port), nprocs=2, join=True)
