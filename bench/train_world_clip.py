"""Train the world CLIP: a small open_clip model, contrastive on whole world images + captions.

    python bench/train_world_clip.py            # ~10-15 min on 2 CPU cores

It never sees a masked image: its own "clip" split of the world (disjoint from train/val by seed)
is rendered at 128 px, resized to the model's 64 px and paired with one of the image's captions
per step. The result, ``assets/world_clip/world_clip.pt`` (fp16 state dict; token-embedding rows
of tokens absent from the training captions are zero from the start, so the file compresses), and
``assets/world_clip/train_log.json`` (loss curve, zero-shot accuracy, timing) are committed so
tests, the README demo and benchmarks never retrain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip  # noqa: E402

from ovseg.clip import VILD_TEMPLATES, TextEmbeddingCache, load_clip  # noqa: E402
from ovseg.segment import classify_masks  # noqa: E402
from pipelines.world.categories import NAMES, by_name  # noqa: E402
from pipelines.world.generate import make_sample  # noqa: E402

MODEL = "world-clip"


def _render(job: tuple[int, str, int, int]) -> tuple[np.ndarray, list[str], str]:
    seed, split, index, size = job
    scene, captions = make_sample(seed, split, index)
    small = np.asarray(Image.fromarray(scene.image).resize((size, size), Image.BICUBIC))
    return small.transpose(2, 0, 1).copy(), [c.text for c in captions], "+".join(sorted(scene.meta["stuff_layout"]))


def render_split(seed: int, split: str, n: int, size: int, workers: int
                 ) -> tuple[torch.Tensor, list[list[str]], list[str]]:
    """``n`` images of ``split``: uint8 [n,3,size,size], their captions, their background kind."""
    jobs = [(seed, split, i, size) for i in range(n)]
    with mp.get_context("fork").Pool(workers) as pool:
        out = list(tqdm(pool.imap(_render, jobs, chunksize=64), total=n, desc=f"render {split}"))
    return torch.from_numpy(np.stack([o[0] for o in out])), [o[1] for o in out], [o[2] for o in out]


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


@torch.no_grad()
def evaluate(model, tokenizer, seed: int, n_val: int, mean, std) -> dict:
    """Zero-shot whole-image hit@1 (top class present in the image) and GT masked-crop accuracy."""
    model.eval()
    from ovseg.clip import ClipBundle

    bundle = ClipBundle(model, tokenizer, 64, tuple(mean), tuple(std), MODEL)
    text = TextEmbeddingCache(bundle, VILD_TEMPLATES).embed(list(NAMES))
    hits = thing_hits = thing_n = crop_ok = crop_n = 0
    n_things = sum(1 for n in NAMES if by_name(n).kind == "thing")  # things come first in NAMES
    for i in range(n_val):
        scene, _ = make_sample(seed, "val", i)
        small = np.asarray(Image.fromarray(scene.image).resize((64, 64), Image.BICUBIC))
        x = normalise(torch.from_numpy(small.transpose(2, 0, 1).copy())[None], mean, std)
        f = F.normalize(model.encode_image(x).float(), dim=-1)
        top = int((f @ text.T).argmax())
        present = {inst.category.train_id for inst in scene.instances}
        hits += top in present
        if scene.things:  # 16-way: is the best *thing* class one of the drawn objects?
            thing_hits += int((f @ text[:n_things].T).argmax()) in {t.category.train_id for t in scene.things}
            thing_n += 1
        masks = torch.from_numpy(np.stack([inst.mask for inst in scene.instances]))
        probs, valid = classify_masks(bundle, torch.from_numpy(scene.image).permute(2, 0, 1), masks, text_emb=text)
        gt = torch.tensor([inst.category.train_id for inst in scene.instances])
        crop_ok += int((probs.argmax(1) == gt)[valid].sum())
        crop_n += int(valid.sum())
    model.train()
    return {"whole_image_hit1": hits / n_val, "whole_image_thing_hit1": thing_hits / max(thing_n, 1),
            "gt_crop_acc": crop_ok / max(crop_n, 1), "n_val": n_val}


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "token_embedding" in name or "positional_embedding" in name \
                or "class_embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=12000)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--same-background", type=float, default=0.0,
                    help="share of batches drawn from images with one background (hard negatives)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core box)")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("assets/world_clip"))
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    model = open_clip.create_model(MODEL)  # random init from the seed above
    tokenizer = open_clip.get_tokenizer(MODEL)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD

    images, captions, backgrounds = render_split(args.seed, "clip", args.images, 64, max(args.threads, 2))
    groups: dict[str, list[int]] = {}
    for i, bg in enumerate(backgrounds):
        groups.setdefault(bg, []).append(i)
    group_of = [torch.tensor(groups[bg]) for bg in backgrounds]
    flat = [c for caps in captions for c in caps]
    tokens = tokenizer(flat)  # [total_captions, L]
    owner = torch.tensor([i for i, caps in enumerate(captions) for _ in caps])
    first = torch.zeros(args.images + 1, dtype=torch.long)
    first[1:] = torch.bincount(owner, minlength=args.images).cumsum(0)
    # Tokens that never occur in the training captions get no gradient and no weight decay, so their
    # embedding rows would stay at their random init forever: zero them up front. Training is
    # unaffected (those rows never enter a forward pass), evaluation prompts that contain such a
    # token (e.g. "medium" in the vild templates) see the same zero row here and in the saved file,
    # and the committed file compresses well in git.
    used = torch.zeros(model.token_embedding.weight.shape[0], dtype=torch.bool)
    used[tokens.unique()] = True
    with torch.no_grad():
        model.token_embedding.weight[~used] = 0
    t_data = time.time() - t_start

    opt = torch.optim.AdamW(param_groups(model, args.wd), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(args.seed)
    log: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "loss": [], "eval": [],
                 "data_seconds": round(t_data, 1)}
    perm, pos = torch.randperm(args.images, generator=gen), 0
    model.train()
    t_train = time.time()
    bar = tqdm(range(args.steps), desc="train world CLIP")
    for step in bar:
        if step % args.eval_every == 0:
            log["eval"].append({"step": step, **evaluate(model, tokenizer, args.seed, args.n_val, mean, std)})
        if args.same_background > 0 and float(torch.rand(1, generator=gen)) < args.same_background:
            # a batch whose images share one background: stuff alone cannot tell them apart
            pool = group_of[int(torch.randint(args.images, (1,), generator=gen))]
            idx = pool[torch.randperm(len(pool), generator=gen)[: args.batch]]
        else:
            if pos + args.batch > args.images:
                perm, pos = torch.randperm(args.images, generator=gen), 0
            idx = perm[pos: pos + args.batch]
            pos += args.batch
        counts = first[idx + 1] - first[idx]
        pick = first[idx] + (torch.rand(len(idx), generator=gen) * counts).long()
        x = images[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        out = model(normalise(x, mean, std), tokens[pick])
        img_f, txt_f, scale = out[:3]  # normalised features [B,D] x2, logit scale
        logits = scale * img_f @ txt_f.T
        target = torch.arange(len(idx))
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        log["loss"].append(round(float(loss), 4))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", scale=f"{float(scale):.1f}")
    train_seconds = time.time() - t_train
    final = evaluate(model, tokenizer, args.seed, args.n_val, mean, std)
    log["eval"].append({"step": args.steps, **final})

    state = {k: v.detach().half() for k, v in model.state_dict().items()}  # fp16 halves the file
    assert not state["token_embedding.weight"][~used].any()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "world_clip.pt"
    torch.save(state, path)
    reloaded = load_clip(MODEL, checkpoint=str(path))
    log["eval_reloaded_fp16"] = evaluate(reloaded.model, reloaded.tokenizer, args.seed, args.n_val, mean, std)
    log.update({
        "model": MODEL, "params": sum(p.numel() for p in model.parameters()),
        "used_tokens": int(used.sum()), "file_bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - t_start, 1),
        "threads": args.threads, "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
        "torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version(),
    })
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"world CLIP: {log['params'] / 1e6:.2f} M params, {path} ({log['file_bytes'] / 1e6:.1f} MB), "
          f"trained {args.steps} steps in {train_seconds / 60:.1f} min (total {log['total_seconds'] / 60:.1f} min); "
          f"zero-shot whole-image hit@1 {final['whole_image_hit1']:.3f} (things only {final['whole_image_thing_hit1']:.3f}), GT masked-crop acc {final['gt_crop_acc']:.3f} "
          f"(reloaded fp16: {log['eval_reloaded_fp16']['gt_crop_acc']:.3f})")


if __name__ == "__main__":
    main()
