"""Run under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo) by
test_train_multiprocess.py: checks that need every rank, reported as one JSON file by rank 0.

    python train_ranks_script.py REPORT.json OUT_DIR key.sub=value ...
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook

from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation.evaluate import evaluate
from decodiff.harness.methods import make_process
from decodiff.harness.training.checkpoint import load_model
from decodiff.harness.training.distributed import gather_to_main, make_accelerator, shutdown
from decodiff.harness.training.feed import TrainFeed
from decodiff.harness.training.latent_cache import latent_cache_for
from decodiff.harness.training.loop import backward, train
from decodiff.harness.training.vae_fit import get_vae
from decodiff.models.unet import build_unet


def flat_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().clone() for p in model.parameters() if p.grad is not None])


def coverage(cfg, data, vae, acc, cache) -> dict:
    """Keys each rank gets over two epochs, and how many steps each rank takes."""
    out = {}
    for name, lc in (("latent_cache", cache), ("images", None)):
        feed = TrainFeed(
            cfg, data, vae, rank=acc.process_index, world=acc.num_processes, device=acc.device, latent_cache=lc
        )
        for epoch in (0, 1):
            steps = list(feed.steps(epoch))
            mine = {
                "keys": [k for s in steps for k in s.keys],
                "steps": len(steps),
                "empty_steps": sum(1 for s in steps if not s.micro),
                "n_global": [s.n_global for s in steps],
                "planned": feed.rank_counts(epoch),
            }
            out[f"{name}-{epoch}"] = gather_to_main(mine)
    return out


def weighted_gradient(acc) -> dict:
    """DDP over uneven, weighted shares vs the mean-loss gradient of all samples in one process."""
    torch.manual_seed(0)
    net = build_unet("tiny", num_classes=3, sample_size=8, dropout=0.0)
    ref = build_unet("tiny", num_classes=3, sample_size=8, dropout=0.0)
    ref.load_state_dict(net.state_dict())
    process = make_process(build_config("tiny"))
    g = torch.Generator().manual_seed(7)
    z0, ids = torch.randn(7, 4, 8, 8, generator=g), torch.randint(0, 3, (7,), generator=g)
    shares = {0: [(0, 2), (2, 4)], 1: [(4, 7)]}  # rank 0: 4 samples in 2 micro-batches; rank 1: 3 in one
    model = acc.prepare(net)

    def run(m, rank, weight):
        gen = torch.Generator().manual_seed(100 + rank)
        return backward(acc, m, process, [(z0[a:b], ids[a:b]) for a, b in shares[rank]], weight, gen)

    run(model, acc.process_index, acc.num_processes / 7)
    ddp = flat_grads(net)
    result = {"ddp": ddp}
    if acc.is_main_process:
        for rank in (0, 1):
            run(ref, rank, 1 / 7)  # one process: the mean over the 7 samples
        result["reference"] = flat_grads(ref)
    return result


def main() -> None:
    report, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = build_config("tiny", sys.argv[3:])
    acc = make_accelerator(cfg)
    with acc.main_process_first():
        data = prepare_data(cfg)
        vae = get_vae(cfg, data)
    cache = latent_cache_for(acc, cfg, data, vae)
    result = {"world": acc.num_processes, "coverage": coverage(cfg, data, vae, acc, cache)}

    w = weighted_gradient(acc)
    ddp_all = gather_to_main(w["ddp"])

    grads: list[torch.Tensor] = []  # the synced gradients the real loop steps with, per step
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: grads.append(
            torch.cat([p.grad.flatten().clone() for g in opt.param_groups for p in g["params"] if p.grad is not None])
        )
    )
    res = train(cfg, data, vae, out, accelerator=acc)
    hook.remove()
    all_grads = gather_to_main(grads[:3])
    digests = gather_to_main(res.weights_sha256)

    model, spec, _ = load_model(res.checkpoint)
    ev = evaluate(cfg, data, model, vae, spec["classes"], out=None)
    same_eval_on_ranks = gather_to_main(json.dumps(ev.records, sort_keys=True))
    if acc.is_main_process:
        result["weighted_gradient"] = {
            "ranks_equal": bool(torch.equal(ddp_all[0], ddp_all[1])),
            "max_abs_diff_to_reference": float((ddp_all[0] - w["reference"]).abs().max()),
            "reference_norm": float(w["reference"].norm()),
        }
        result["loop_gradients"] = {
            "steps": len(all_grads[0]),
            "ranks_equal": all(torch.equal(a, b) for a, b in zip(all_grads[0], all_grads[1])),
            "nonzero": all(bool(g.abs().sum() > 0) for g in all_grads[0]),
        }
        result["digests"] = digests
        result["steps"] = res.steps
        result["eval"] = {"records": ev.records, "samples": ev.samples, "ranks_same": len(set(same_eval_on_ranks)) == 1}
        report.write_text(json.dumps(result))
    dist.barrier()
    shutdown()


if __name__ == "__main__":
    main()
