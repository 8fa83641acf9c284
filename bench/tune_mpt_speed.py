"""Training speed of mask prompt tuning, tiny CLIP vs ViT-B/16 (random init), side by side.

  python -m bench.tune_mpt_speed [--models ovseg-tiny-vit ViT-B-16] [--modes mpt finetune]
                                 [--steps 3] [--threads N] [--device cpu]

Measures optimizer steps on in-memory crops (the real code path: prompted image tower, vocab CE
over frozen text embeddings, AdamW), so the numbers exclude JPEG decoding; plus prompted inference.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable


import torch
import torch.nn.functional as F

from ovseg.clip import load_clip
from ovseg.mpt import MaskPromptCLIP
from pipelines.train.losses import vocab_ce_loss

DEFAULT_BATCH = {"ovseg-tiny-vit": 32, "ViT-B-16": 8}


def _timed(fn: Callable[[], None], steps: int, min_seconds: float) -> tuple[float, int]:
    """Run ``fn`` at least ``steps`` times and ``min_seconds``; returns (seconds, runs)."""
    n, t0 = 0, time.perf_counter()
    while n < steps or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    return time.perf_counter() - t0, n


def make_cell(name: str, mode: str, batch: int, device: str) -> tuple[Callable[[], None], int]:
    """A closure running one step of ``mode`` (mpt | finetune | infer) and its trainable size."""
    bundle = load_clip(name, pretrained=None, device=device)
    model = MaskPromptCLIP(bundle.model, depth=min(3, len(bundle.model.visual.transformer.resblocks))).to(device)
    S = bundle.image_size
    images = torch.randn(batch, 3, S, S, device=device)
    masks = torch.zeros(batch, 1, S, S, dtype=torch.bool, device=device)
    masks[:, :, S // 4: 3 * S // 4, S // 4: 3 * S // 4] = True
    vocab = [f"n{i}" for i in range(16)]
    nouns = [vocab[i % 16] for i in range(batch)]
    text = F.normalize(torch.randn(16, bundle.embed_dim, device=device), dim=-1)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model.encode_image(images, masks)
            sync()
        return step, 0

    names = model.set_trainable(mode)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step() -> None:
        loss, _ = vocab_ce_loss(model.encode_image(images, masks), nouns, vocab, text_features=text,
                                logit_scale=model.logit_scale)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
    return step, sum(p.numel() for p in params) if names else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ovseg-tiny-vit", "ViT-B-16"])
    parser.add_argument("--modes", nargs="+", default=["mpt", "finetune", "infer"])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round at least")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time per cell and round at least")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cells = {(m, mode): make_cell(m, mode, DEFAULT_BATCH.get(m, 8), args.device)
             for mode in args.modes for m in args.models}
    best = {key: 0.0 for key in cells}
    for key, (step, _) in cells.items():  # warm-up (kernel selection, allocations)
        for _ in range(2):
            step()
    for _ in range(args.rounds):  # interleaved rounds; the best round resists noisy neighbours
        for key, (step, _) in cells.items():
            seconds, n = _timed(step, args.steps, args.min_seconds)
            best[key] = max(best[key], DEFAULT_BATCH.get(key[0], 8) * n / seconds)
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"best of {args.rounds} interleaved rounds")
    print(f"{'mode':10s}" + "".join(f"{m:>24s}" for m in args.models) + "   ratio (first/last)")
    for mode in args.modes:
        rates = [best[(m, mode)] for m in args.models]
        print(f"{mode:10s}" + "".join(f"{r:>14.1f} samples/s" for r in rates) + f"   {rates[0] / rates[-1]:8.1f}x")
    print("trainable elements: " + ", ".join(
        f"{m}/{mode}={cells[(m, mode)][1]:,}" for (m, mode) in cells if mode != "infer"))
    print("batch: " + ", ".join(f"{m}={DEFAULT_BATCH.get(m, 8)}" for m in args.models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
