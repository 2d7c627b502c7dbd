#!/usr/bin/env python3
"""The training step of `repopt bench train`, in PyTorch, for a side-by-side comparison.

Builds the same RepOpt-VGG forms (target trained with RepOptimizer-SGD, RepVGG, Hyper-Search)
with the same widths, batch, resolution, loss (cross-entropy with label smoothing 0.1) and
optimizer (nesterov SGD, momentum 0.9, weight decay 4e-5, Grad Mults on the target's 3x3
kernels), times whole steps (forward, loss, backward, optimizer) after warm-up with a device
sync at the end of each timed region, and prints images/s per mode. With `--repopt BINARY`
it also runs `BINARY bench train --json` with the same settings and prints the ratio.

    python3 benches/pytorch_step.py --config A0 --modes target,repvgg,hs --batch 32 --res 32 \
        --repopt target/release/repopt

TF32 is switched off so both sides compute in fp32.
"""

import argparse
import json
import math
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "A0": ([2, 4, 14, 1], [0.75, 0.75, 0.75, 2.5]),
    "A1": ([2, 4, 14, 1], [1.0, 1.0, 1.0, 2.5]),
    "B0": ([4, 6, 16, 1], [1.0, 1.0, 1.0, 2.5]),
    "B1": ([4, 6, 16, 1], [2.0, 2.0, 2.0, 4.0]),
    "B2": ([4, 6, 16, 1], [2.5, 2.5, 2.5, 5.0]),
    "L1": ([8, 14, 24, 1], [2.0, 2.0, 2.0, 4.0]),
    "L2": ([8, 14, 24, 1], [2.5, 2.5, 2.5, 5.0]),
}


def blocks_of(config):
    """(in, out, stride, depth in its stage) per block, as repopt's VggConfig::blocks()."""
    num_blocks, w = PRESETS[config]
    widths = [min(64, int(64 * w[0])), int(64 * w[0]), int(128 * w[1]), int(256 * w[2]), int(512 * w[3])]
    out = [(3, widths[0], 2, 0)]
    cin = widths[0]
    for stage, n in enumerate(num_blocks, start=1):
        for i in range(n):
            out.append((cin, widths[stage], 2 if i == 0 else 1, i))
            cin = widths[stage]
    return out


class Target(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class RepVGG(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.dense = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.dense_bn = nn.BatchNorm2d(cout)
        self.one = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.one_bn = nn.BatchNorm2d(cout)
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None

    def forward(self, x):
        y = self.dense_bn(self.dense(x)) + self.one_bn(self.one(x))
        if self.identity is not None:
            y = y + self.identity(x)
        return F.relu(y)


def hs_initial_scale(depth):
    """1 for the first block of a stage, sqrt(2 / depth) after it."""
    return 1.0 if depth == 0 else math.sqrt(2.0 / depth)


class HyperSearch(nn.Module):
    def __init__(self, cin, cout, stride, depth):
        super().__init__()
        init = hs_initial_scale(depth)
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.scale_conv = nn.Parameter(torch.full((1, cout, 1, 1), init))
        self.conv_1x1 = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.scale_1x1 = nn.Parameter(torch.full((1, cout, 1, 1), init))
        self.has_identity = cin == cout and stride == 1
        if self.has_identity:
            self.scale_identity = nn.Parameter(torch.ones(1, cout, 1, 1))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.scale_conv * self.conv(x) + self.scale_1x1 * self.conv_1x1(x)
        if self.has_identity:
            y = y + self.scale_identity * x
        return F.relu(self.bn(y))


class Net(nn.Module):
    def __init__(self, config, mode, classes=1000):
        super().__init__()
        layers = []
        self.depths = []
        for cin, cout, stride, depth in blocks_of(config):
            self.depths.append(depth)
            if mode == "target":
                layers.append(Target(cin, cout, stride))
            elif mode == "repvgg":
                layers.append(RepVGG(cin, cout, stride))
            elif mode == "hs":
                layers.append(HyperSearch(cin, cout, stride, depth))
            else:
                raise SystemExit(f"unknown mode {mode!r} (expected target, repvgg or hs)")
        self.body = nn.Sequential(*layers)
        self.linear = nn.Linear(blocks_of(config)[-1][1], classes)

    def forward(self, x):
        return self.linear(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


def grad_mults(net):
    """Grad Mults of the target's 3x3 kernels from the HS-initial scales, as `repopt bench
    train` uses: s^2 everywhere, + t^2 at the centre, + 1 at the diagonal centre when the
    block has an identity."""
    mults = {}
    for depth, block in zip(net.depths, net.body):
        w = block.conv.weight
        s2 = hs_initial_scale(depth) ** 2
        m = torch.full_like(w, s2)
        m[:, :, 1, 1] += s2
        cout, cin = w.shape[:2]
        if cin == cout and block.conv.stride == (1, 1):
            idx = torch.arange(cout)
            m[idx, idx, 1, 1] += 1.0
        mults[w] = m
    return mults


def step_time(net, mode, batch, res, device, warmup, reps):
    decay = [p for n, p in net.named_parameters() if p.ndim == 4 or n.endswith("linear.weight") or "scale_identity" in n]
    others = [p for n, p in net.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 4e-5}, {"params": others, "weight_decay": 0.0}],
        lr=0.1, momentum=0.9, nesterov=True,
    )
    mults = grad_mults(net) if mode == "target" else {}
    x = torch.randn(batch, 3, res, res, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def one():
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m in mults.items():
            p.grad.mul_(m)
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        one()
    sync()
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            one()
        sync()
        samples.append((time.perf_counter() - start) / reps)
    return sorted(samples)[len(samples) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="A0", choices=sorted(PRESETS))
    ap.add_argument("--modes", default="target,repvgg,hs")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repopt", help="path of the repopt binary to run side by side")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    modes = args.modes.split(",")

    ours = {}
    if args.repopt:
        out = subprocess.run(
            [args.repopt, "bench", "train", "--json", "--config", args.config, "--modes", args.modes,
             "--batch", str(args.batch), "--res", str(args.res)],
            check=True, capture_output=True, text=True,
        ).stdout
        for line in out.splitlines():
            r = json.loads(line)
            ours[r["mode"]] = r["images_per_s"]

    for mode in modes:
        torch.manual_seed(0)
        net = Net(args.config, mode).to(device).train()
        t = step_time(net, mode, args.batch, args.res, device, args.warmup, args.reps)
        row = {
            "framework": "pytorch", "device": str(device), "mode": mode, "config": args.config,
            "batch": args.batch, "res": args.res, "images_per_s": args.batch / t, "ms_per_step": 1e3 * t,
        }
        if mode in ours:
            row["repopt_images_per_s"] = ours[mode]
            row["repopt_over_pytorch"] = ours[mode] / row["images_per_s"]
        print(json.dumps(row))


if __name__ == "__main__":
    main()
