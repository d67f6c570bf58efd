"""AdamW's foreach kernel on CPU gives bitwise the weights of torch's per-parameter loop."""

import copy

import torch

from decodiff.harness.config import TrainSection
from decodiff.harness.training.optimizer import make_optimizer
from decodiff.models.unet import build_unet


def test_cpu_adamw_is_foreach_and_bitwise_equal_to_the_single_tensor_loop():
    torch.manual_seed(0)
    net = build_unet("tiny", num_classes=2, sample_size=8).train()
    twin = copy.deepcopy(net)
    t = TrainSection(lr=3e-3, weight_decay=1e-2)
    ours = make_optimizer(net, t, torch.device("cpu"))
    assert ours.defaults["foreach"] is True
    loop = torch.optim.AdamW(twin.parameters(), lr=t.lr, weight_decay=t.weight_decay, foreach=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        z, tgt = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        steps, ids = torch.randint(0, 10, (2,), generator=g), torch.tensor([0, 1])
        for model, opt in ((net, ours), (twin, loop)):
            torch.nn.functional.mse_loss(model(z, steps, ids), tgt).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, a), b in zip(net.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name
