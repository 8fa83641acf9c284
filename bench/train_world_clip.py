"""Train the world CLIP in two stages on whole world images and their captions only.

    python -m bench.train_world_clip             # ~1-2 h on 2 CPU cores; minutes on a GPU
    python -m bench.train_world_clip --help

The committed v1 (``assets/world_clip/``) is this recipe from scratch (``--image-steps 4500``). v2
(``assets/world_clip_v2/``, 26 min on 2 cores) continues v1's image tower with half of the images
zoomed in 1-3x, then trains a new text tower:

    python -m bench.train_world_clip --zoom 0.5 --init-visual assets/world_clip/world_clip.pt \
        --image-steps 1500 --lr 0.0005 --warmup 100 --out out/world_clip_v2

Stage 1, *image pre-training*: the image tower (an open_clip ViT with a convolutional stem that
keeps the 8×8 token grid, ``ovseg.conv_stem``) learns multi-label classification of the category
nouns its captions name (weak labels: captions omit present objects and name absent ones), through
a cosine classifier on the CLIP image embedding. Stage 2, *locked-image text tuning* (LiT, Zhai et
al. 2022): the image tower is frozen and the text tower is trained contrastively on (image
embedding, caption) pairs, so prompts such as "a photo of a star." land where star images are.

The model never sees a masked image: its own "clip" split of the world (disjoint from train/val by
seed) is rendered at 128 px and resized to 64 px. Deterministic for a seed and thread count. Writes
``world_clip.pt`` (fp16 state dict; token-embedding rows of tokens absent from the training captions
are zero, so the file compresses) and ``train_log.json`` (losses, whole-image object hit@1, the
spread of the object prompts' text embeddings, ground-truth masked-crop accuracy, timing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm


import open_clip

from ovseg.clip import VILD_TEMPLATES, ClipBundle, TextEmbeddingCache, load_clip
from ovseg.conv_stem import apply_conv_stem
from ovseg.segment import classify_masks
from pipelines.world.categories import CATEGORIES, NAMES, THINGS
from pipelines.world.generate import make_sample

MODEL = "world-clip"
SIZE = 64
N_THINGS = len(THINGS)  # things come first in NAMES


def caption_labels(captions: list[str]) -> np.ndarray:
    """Multi-hot ``[len(NAMES)]`` float: the categories any of the captions names (weak labels)."""
    text = " ".join(captions).lower()
    out = np.zeros(len(NAMES), dtype=np.float32)
    for c in CATEGORIES:
        if re.search(rf"\b({re.escape(c.name)}|{re.escape(c.plural)})\b", text):
            out[c.train_id] = 1.0
    return out


def _render(job: tuple[int, str, int]) -> tuple[np.ndarray, list[str]]:
    seed, split, index = job
    scene, captions = make_sample(seed, split, index)
    small = np.asarray(Image.fromarray(scene.image).resize((SIZE, SIZE), Image.BICUBIC))
    return small.transpose(2, 0, 1).copy(), [c.text for c in captions]


def render_split(seed: int, split: str, n: int, workers: int) -> tuple[torch.Tensor, list[list[str]]]:
    """``n`` images of ``split``: uint8 ``[n,3,64,64]`` and their captions."""
    jobs = [(seed, split, i) for i in range(n)]
    with mp.get_context("fork").Pool(workers) as pool:
        out = list(tqdm(pool.imap(_render, jobs, chunksize=64), total=n, desc=f"render {split}"))
    return torch.from_numpy(np.stack([o[0] for o in out])), [o[1] for o in out]


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B,3,S,S]`` → CLIP-normalised float."""
    m = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


def augment(x: torch.Tensor, gen: torch.Generator, zoom: float = 0.0) -> torch.Tensor:
    """Random flip, scale 0.85-1.15 and shift ±10 % per image: ``[B,3,S,S]`` float → same.

    With ``zoom`` > 0, that share of the images is instead zoomed in 1-3× at a random place inside
    the image (a random-resized crop of the whole image), so objects are also seen as large as a
    tight masked crop shows them.
    """
    b = x.shape[0]
    scale = 1.0 / (0.85 + 0.3 * torch.rand(b, generator=gen))
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=gen) - 0.5) * 0.2
    if zoom > 0:
        zoomed = torch.rand(b, generator=gen) < zoom
        z_scale = 1.0 / (1.0 + 2.0 * torch.rand(b, generator=gen))
        z_shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - z_scale).unsqueeze(1)
        scale = torch.where(zoomed, z_scale, scale)
        shift = torch.where(zoomed.unsqueeze(1), z_shift, shift)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class CosineHead(torch.nn.Module):
    """Multi-label cosine classifier on CLIP image embeddings: ``[B,D]`` → ``[B,K]`` logits."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, dim) * dim**-0.5)
        self.bias = torch.nn.Parameter(torch.full((classes,), -2.0))
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(feats, dim=-1) @ F.normalize(self.weight, dim=-1).T + self.bias


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0."""
    return peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))


def param_groups(named, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        flat = p.ndim < 2 or any(k in name for k in ("embedding", "logit_scale", "scale", "bias"))
        (no_decay if flat else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def val_images(seed: int, n: int) -> tuple[torch.Tensor, list]:
    """Held-out "val" world images at 64 px ``[n,3,64,64]`` uint8 and their scenes."""
    scenes, small = [], []
    for i in range(n):
        scene, _ = make_sample(seed, "val", i)
        scenes.append(scene)
        img = np.asarray(Image.fromarray(scene.image).resize((SIZE, SIZE), Image.BICUBIC))
        small.append(img.transpose(2, 0, 1).copy())
    return torch.from_numpy(np.stack(small)), scenes


def thing_hit1(scores: torch.Tensor, scenes: list) -> float:
    """Share of images with objects whose top object class ``scores[:, :16]`` is one drawn in them."""
    hits = n = 0
    top = scores[:, :N_THINGS].argmax(1)
    for t, scene in zip(top.tolist(), scenes):
        if scene.things:
            hits += t in {inst.category.train_id for inst in scene.things}
            n += 1
    return hits / max(n, 1)


@torch.no_grad()
def evaluate_clip(model, tokenizer, val_x: torch.Tensor, scenes: list, n_crops: int) -> dict:
    """Zero-shot whole-image hit@1 (all 22 and things only), prompt spread, GT masked-crop accuracy."""
    model.eval()
    bundle = ClipBundle(model, tokenizer, SIZE, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, MODEL)
    text = TextEmbeddingCache(bundle, VILD_TEMPLATES).embed(list(NAMES))  # [22, D]
    f = F.normalize(model.encode_image(normalise(val_x)).float(), dim=-1)
    sims = f @ text.T
    top = sims.argmax(1).tolist()
    all_hit = float(np.mean([t in {i.category.train_id for i in s.instances} for t, s in zip(top, scenes)]))
    things = text[:N_THINGS]
    cos = things @ things.T
    off = cos[~torch.eye(N_THINGS, dtype=torch.bool)]
    ok = n = 0
    by_kind = {"thing": [0, 0], "stuff": [0, 0]}
    for scene in scenes[:n_crops]:
        masks = torch.from_numpy(np.stack([inst.mask for inst in scene.instances]))
        probs, valid = classify_masks(bundle, torch.from_numpy(scene.image).permute(2, 0, 1), masks, text_emb=text, temperature=None)
        gt = torch.tensor([inst.category.train_id for inst in scene.instances])
        right = (probs.argmax(1) == gt) & valid
        for inst, r, v in zip(scene.instances, right.tolist(), valid.tolist()):
            if v:
                by_kind[inst.category.kind][0] += r
                by_kind[inst.category.kind][1] += 1
        ok += int(right.sum())
        n += int(valid.sum())
    model.train()
    return {
        "whole_image_hit1": round(all_hit, 4),
        "whole_image_thing_hit1": round(thing_hit1(sims, scenes), 4),
        "thing_prompt_cos_mean": round(float(off.mean()), 4),
        "thing_prompt_cos_max": round(float(off.max()), 4),
        "gt_crop_acc": round(ok / max(n, 1), 4),
        "gt_crop_acc_things": round(by_kind["thing"][0] / max(by_kind["thing"][1], 1), 4),
        "gt_crop_acc_stuff": round(by_kind["stuff"][0] / max(by_kind["stuff"][1], 1), 4),
        "n_val": len(scenes), "n_crop_images": min(n_crops, len(scenes)),
    }


def train_image_tower(model, images, labels, val_x, val_scenes, args, log) -> None:
    """Stage 1: multi-label cosine classification of caption nouns on augmented whole images."""
    visual = model.visual
    head = CosineHead(int(model.text_projection.shape[-1]), len(NAMES))
    named = list(visual.named_parameters()) + [(f"head.{k}", v) for k, v in head.named_parameters()]
    opt = torch.optim.AdamW(param_groups(named, args.wd), lr=args.lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed + 1)
    n = images.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    bar = tqdm(range(args.image_steps), desc="stage 1: image tower", mininterval=10)
    for step in bar:
        if step % args.eval_every == 0 or step == args.image_steps - 1:
            with torch.no_grad():
                visual.eval()
                scores = torch.cat([head(visual(normalise(c))) for c in val_x.split(256)])
                visual.train()
            hit = thing_hit1(scores, val_scenes)
            log["stage1_eval"].append({"step": step, "head_thing_hit1": round(hit, 4)})
            if args.out is not None and step:  # a snapshot to try stage 2 on while stage 1 goes on
                torch.save(visual.state_dict(), args.out / "stage1_visual_latest.pt")
            bar.set_postfix(hit=f"{hit:.3f}")
        if pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos: pos + args.batch]
        pos += args.batch
        x = augment(normalise(images[idx]), gen, args.zoom)
        lr = lr_at(step, args.image_steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.binary_cross_entropy_with_logits(head(visual(x)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log["stage1_loss"].append(round(loss.item(), 4))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", hit=f"{log['stage1_eval'][-1]['head_thing_hit1']:.3f}")


def train_text_tower(model, images, tokens, first, args, log) -> None:
    """Stage 2 (LiT): frozen image tower, contrastive text-tower training on caption tokens."""
    visual = model.visual
    visual.eval()
    for p in visual.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(args.seed + 2)
    with torch.no_grad():  # two views per image (plain and flipped), computed once
        feats = torch.stack([
            torch.cat([F.normalize(visual(normalise(c)), dim=-1) for c in images.split(512)]),
            torch.cat([F.normalize(visual(normalise(c).flip(-1)), dim=-1) for c in images.split(512)]),
        ])  # [2, N, D]
    text_named = [(k, v) for k, v in model.named_parameters() if not k.startswith("visual.")]
    opt = torch.optim.AdamW(param_groups(text_named, args.wd), lr=args.text_lr, betas=(0.9, 0.98))
    n = images.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    bar = tqdm(range(args.text_steps), desc="stage 2: text tower (LiT)", mininterval=10)
    for step in bar:
        if pos + args.text_batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos: pos + args.text_batch]
        pos += args.text_batch
        counts = first[idx + 1] - first[idx]
        pick = first[idx] + (torch.rand(len(idx), generator=gen) * counts).long()
        view = (torch.rand(len(idx), generator=gen) < 0.5).long()
        img_f = feats[view, idx]
        lr = lr_at(step, args.text_steps, args.text_lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        txt_f = F.normalize(model.encode_text(tokens[pick]), dim=-1)
        logits = model.logit_scale.exp() * img_f @ txt_f.T
        target = torch.arange(len(idx))
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        log["stage2_loss"].append(round(loss.item(), 4))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}")
    for p in visual.parameters():
        p.requires_grad_(True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=24000, help="whole images rendered for training")
    ap.add_argument("--image-steps", type=int, default=6000, help="stage 1 steps")
    ap.add_argument("--text-steps", type=int, default=1500, help="stage 2 (LiT) steps")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--text-lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--n-val", type=int, default=400, help="held-out val images for the whole-image metrics")
    ap.add_argument("--n-crop-val", type=int, default=200, help="of those, images whose GT masks are cut and scored")
    ap.add_argument("--out", type=Path, default=Path("out/world_clip"),
                    help="default out/world_clip; the committed weights were written with --out assets/world_clip")
    ap.add_argument("--zoom", type=float, default=0.0,
                    help="share of stage-1 images zoomed in 1-3x (0: the committed weights' recipe)")
    ap.add_argument("--init-visual", type=Path, default=None,
                    help="start stage 1 from this image tower (a stage1_visual.pt, or a world_clip.pt's visual.* keys) "
                         "instead of random init")
    ap.add_argument("--stage1", type=Path, default=None,
                    help="skip stage 1 and load this image tower (the stage1_visual.pt a previous run wrote)")
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    model = apply_conv_stem(open_clip.create_model(MODEL), MODEL)  # random init from the seed above
    tokenizer = open_clip.get_tokenizer(MODEL)

    images, captions = render_split(args.seed, "clip", args.images, 2)
    labels = torch.from_numpy(np.stack([caption_labels(c) for c in captions]))
    val_x, val_scenes = val_images(args.seed, args.n_val)
    flat = [c for caps in captions for c in caps]
    tokens = tokenizer(flat)  # [total_captions, L]
    owner = torch.tensor([i for i, caps in enumerate(captions) for _ in caps])
    first = torch.zeros(args.images + 1, dtype=torch.long)
    first[1:] = torch.bincount(owner, minlength=args.images).cumsum(0)
    # Token rows that never occur in the training captions never get a gradient: zero them up front
    # so evaluation prompts with such tokens see the same zero row here and in the saved file.
    used = torch.zeros(model.token_embedding.weight.shape[0], dtype=torch.bool)
    used[tokens.unique()] = True
    with torch.no_grad():
        model.token_embedding.weight[~used] = 0
    log: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "data_seconds": round(time.time() - t_start, 1),
                 "label_rate": labels.mean(0).tolist(), "stage1_loss": [], "stage1_eval": [], "stage2_loss": []}

    model.train()
    t1 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.init_visual is not None:
        state = torch.load(args.init_visual, map_location="cpu", weights_only=True)
        if any(k.startswith("visual.") for k in state):  # a whole world_clip.pt: its image tower
            state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        model.visual.load_state_dict(state)
    if args.stage1 is not None:
        model.visual.load_state_dict(torch.load(args.stage1, map_location="cpu", weights_only=True))
        log["stage1_from"] = str(args.stage1)
    else:
        train_image_tower(model, images, labels, val_x, val_scenes, args, log)
        torch.save(model.visual.state_dict(), args.out / "stage1_visual.pt")  # not committed: reruns of stage 2
    log["stage1_seconds"] = round(time.time() - t1, 1)
    t2 = time.time()
    train_text_tower(model, images, tokens, first, args, log)
    log["stage2_seconds"] = round(time.time() - t2, 1)
    final = evaluate_clip(model, tokenizer, val_x, val_scenes, args.n_crop_val)
    log["final"] = final

    state = {k: v.detach().half() for k, v in model.state_dict().items()}  # fp16 halves the file
    assert not state["token_embedding.weight"][~used].any()
    path = args.out / "world_clip.pt"
    torch.save(state, path)
    reloaded = load_clip(MODEL, checkpoint=str(path))
    log["final_reloaded_fp16"] = evaluate_clip(reloaded.model, reloaded.tokenizer, val_x, val_scenes, args.n_crop_val)
    log.update({
        "model": MODEL, "params": sum(p.numel() for p in model.parameters()),
        "used_tokens": int(used.sum()), "file_bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "total_seconds": round(time.time() - t_start, 1), "threads": args.threads,
        "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
        "torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version(),
    })
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"world CLIP: {log['params'] / 1e6:.2f} M params, {path} ({log['file_bytes'] / 1e6:.1f} MB), "
          f"total {log['total_seconds'] / 60:.1f} min; whole-image object hit@1 {final['whole_image_thing_hit1']:.3f}, "
          f"object prompt cos mean {final['thing_prompt_cos_mean']:.3f}, GT masked-crop acc {final['gt_crop_acc']:.3f} "
          f"(objects {final['gt_crop_acc_things']:.3f}, backgrounds {final['gt_crop_acc_stuff']:.3f})")


if __name__ == "__main__":
    main()
