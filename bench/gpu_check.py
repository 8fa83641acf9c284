"""The GPU check: image-tower, mining-loop and tuning speeds at real model sizes, in one run.

  python -m bench.gpu_check [--out out/gpu_check.json] [--quick] [--device cuda]

Needs only torch, torchvision, timm, numpy and pillow (no Ray, open_clip, spaCy or webdataset):
the CLIP image towers are timm's CLIP-shaped ViTs (``vit_base_patch16_clip_224`` = ViT-B/16,
``vit_large_patch14_clip_224`` = ViT-L/14), random-initialised; nouns come from a precomputed
list, not spaCy. Measures, in bf16 autocast on CUDA (fp32 on CPU):

* ``matmul``: a large square matmul, the reference peak of this run;
* ``encode``: masked-crop encoding crops/s per tower at its best batch, with FLOPs per crop
  (``torch.utils.flop_counter``) and the share of the matmul peak;
* ``mining``: the mining unit loop end to end on a generated JPEG corpus (DataLoader workers
  decode and make 32 proposals per image; on the device: crop cutting with ``roi_align``, the
  ViT-B/16 tower, cached noun embeddings, vectorised matching; JPEG pairs written to a tar), images/s;
* ``tune``: samples/s of mask prompt tuning (tower frozen, a learned token replaces the patches
  outside the mask) and of full fine-tuning (AdamW), per tower;
* ``maskformer``: class-agnostic proposals images/s of OVSeg's Swin-B MaskFormer (``ovseg.maskformer``).

``--quick`` shrinks every size (a tiny ViT, a few images) so the whole check runs on a CPU in
seconds; the unit test uses it. Writes one JSON and prints a short table.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import tempfile
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import roi_align

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]) * 255
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]) * 255
TOWERS = {"ViT-B/16": "vit_base_patch16_clip_224", "ViT-L/14": "vit_large_patch14_clip_224"}
NOUNS = ["person", "dog", "cat", "car", "tree", "sky", "road", "grass", "building", "table", "chair", "cup",
         "bicycle", "horse", "boat", "bird", "flower", "window", "door", "wall", "water", "mountain", "bus", "bed"]


def build_tower(name: str, quick: bool, device: torch.device) -> torch.nn.Module:
    if quick:
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0,
                                  pre_norm=True, class_token=True)
    else:
        model = timm.create_model(TOWERS[name], pretrained=False, num_classes=0)
    return model.to(device).eval()


def image_size(model: torch.nn.Module) -> int:
    return int(model.patch_embed.img_size[0])


def timed_rate(fn: Callable[[], Any], items: int, *, seconds: float, device: torch.device) -> float:
    """items/s of ``fn`` over at least ``seconds`` (after one warm-up call)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or n == 0:
        fn()
        n += items
    sync()
    return n / (time.perf_counter() - started)


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def matmul_peak(device: torch.device, *, quick: bool, seconds: float) -> float:
    n = 256 if quick else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 * timed_rate(lambda: a @ b, 1, seconds=seconds, device=device)


def encode_check(model, device, *, batches: list[int], seconds: float, peak: float) -> dict[str, Any]:
    size = image_size(model)
    x = torch.randn(1, 3, size, size, device=device)
    with torch.inference_mode(), autocast(device), FlopCounterMode(display=False) as counter:
        model(x)
    flops = float(counter.get_total_flops())
    rates = {}
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device):
            rates[batch] = timed_rate(lambda: model(x), batch, seconds=seconds, device=device)
    best = max(rates, key=rates.get)
    return {"crops_per_s": rates[best], "best_batch": best, "per_batch": rates, "gflops_per_crop": flops / 1e9,
            "share_of_matmul_peak": flops * rates[best] / peak}


# ------------------------------------------------------------------ the mining loop
def make_corpus(root: Path, n: int, size: int) -> Path:
    """``n`` JPEGs of random blobs and a precomputed nouns file (3 nouns per image)."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        pixels = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((size, size), Image.BICUBIC).save(root / f"{i:06d}.jpg", quality=90)
        entries.append({"file": f"{i:06d}.jpg", "nouns": list(rng.choice(NOUNS, 3, replace=False))})
    (root / "nouns.json").write_text(json.dumps(entries))
    return root / "nouns.json"


class ProposalDataset(torch.utils.data.Dataset):
    """Decoded image ``[3,H,W]`` uint8, 32 elliptical proposals ``[32,H,W]`` bool, noun ids."""

    def __init__(self, nouns_file: Path, masks: int) -> None:
        self.root, self.entries, self.masks = nouns_file.parent, json.loads(nouns_file.read_text()), masks

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        entry = self.entries[i]
        pixels = np.array(Image.open(self.root / entry["file"]).convert("RGB"))
        h, w = pixels.shape[:2]
        rng = np.random.default_rng(i)
        cy, cx = rng.uniform(0, h, self.masks), rng.uniform(0, w, self.masks)
        ry, rx = rng.uniform(0.05, 0.4, self.masks) * h, rng.uniform(0.05, 0.4, self.masks) * w
        yy, xx = np.ogrid[:h, :w]
        masks = ((yy[None] - cy[:, None, None]) / ry[:, None, None]) ** 2 + \
                ((xx[None] - cx[:, None, None]) / rx[:, None, None]) ** 2 <= 1.0
        ids = torch.tensor([NOUNS.index(n) for n in entry["nouns"]])
        return torch.from_numpy(pixels).permute(2, 0, 1), torch.from_numpy(masks), ids


def cut_crops(images: torch.Tensor, masks: torch.Tensor, size: int) -> torch.Tensor:
    """Masked crops of every mask of every image on the device, in one ``roi_align`` pair.

    Args:
        images: ``[B,3,H,W]`` uint8. masks: ``[B,M,H,W]`` bool.
    Returns:
        ``[B·M,3,S,S]`` float, CLIP-normalised, pixels outside the mask = the mean colour (0).
    """
    b, m, h, w = masks.shape
    flat = masks.flatten(0, 1)
    rows, cols = flat.any(2), flat.any(1)
    ar_h, ar_w = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    y0, y1 = torch.where(rows, ar_h, h).amin(1), torch.where(rows, ar_h, -1).amax(1) + 1
    x0, x1 = torch.where(cols, ar_w, w).amin(1), torch.where(cols, ar_w, -1).amax(1) + 1
    owner = torch.arange(b, device=masks.device).repeat_interleave(m)
    boxes = torch.stack([owner, x0, y0, x1, y1], 1).float()
    pix = roi_align(images.float(), boxes, size, aligned=True)
    mask_boxes = boxes.clone()
    mask_boxes[:, 0] = torch.arange(b * m, device=masks.device)
    inside = roi_align(flat[:, None].float(), mask_boxes, size, aligned=True) > 0.5
    normed = (pix - CLIP_MEAN.to(pix.device).view(1, 3, 1, 1)) / CLIP_STD.to(pix.device).view(1, 3, 1, 1)
    return torch.where(inside, normed, torch.zeros((), device=pix.device))


def mining_check(model, device, *, images: int, image_px: int, masks: int, batch: int, workers: int) -> dict[str, Any]:
    """Images/s of the mining loop end to end (decode → proposals → crops → tower → match → write)."""
    size = image_size(model)
    text = F.normalize(torch.randn(len(NOUNS), model.num_features, device=device), dim=-1)  # cached per noun
    with tempfile.TemporaryDirectory() as tmp:
        nouns_file = make_corpus(Path(tmp), images, image_px)
        loader = torch.utils.data.DataLoader(ProposalDataset(nouns_file, masks), batch_size=batch,
                                             num_workers=workers, pin_memory=device.type == "cuda",
                                             persistent_workers=False, prefetch_factor=4 if workers else None)
        pairs, waited, started = 0, 0.0, time.perf_counter()
        with tarfile.open(Path(tmp) / "pairs.tar", "w") as tar:
            fetch = time.perf_counter()
            for pixels, mask_t, noun_ids in loader:
                waited += time.perf_counter() - fetch
                pixels, mask_t = pixels.to(device, non_blocking=True), mask_t.to(device, non_blocking=True)
                noun_ids = noun_ids.to(device)
                with torch.inference_mode(), autocast(device):
                    crops = cut_crops(pixels, mask_t, size).contiguous(memory_format=torch.channels_last)
                    feats = F.normalize(model(crops).float(), dim=-1).view(len(pixels), masks, -1)
                    sim = torch.einsum("bkd,bmd->bkm", text[noun_ids], feats)  # [B,K,M]
                    best = sim.argmax(2)  # best mask per noun, no Python per sample
                    chosen = crops.view(len(pixels), masks, 3, size, size)[
                        torch.arange(len(pixels), device=device)[:, None], best]  # [B,K,3,S,S]
                    out = (chosen.float() * CLIP_STD.to(device).view(3, 1, 1) + CLIP_MEAN.to(device).view(3, 1, 1))
                    out = out.clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
                for j, crop in enumerate(out.reshape(-1, size, size, 3)):
                    buf = io.BytesIO()
                    Image.fromarray(crop).save(buf, format="JPEG", quality=90)
                    info = tarfile.TarInfo(f"{pairs + j:09d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
                pairs += len(out.reshape(-1, size, size, 3))
                fetch = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return {"images_per_s": images / seconds, "scored_masks_per_image": masks, "pairs": pairs,
            "loader_wait_share": waited / seconds, "images": images, "image_px": image_px, "workers": workers}


# ------------------------------------------------------------------ tuning
def tune_check(model, device, *, mode: str, batch: int, seconds: float) -> float:
    """samples/s of one optimizer step: ``mpt`` (tower frozen, learned mask token) or ``finetune``."""
    size, patch = image_size(model), int(model.patch_embed.patch_size[0])
    grid = size // patch
    prompt = torch.nn.Parameter(torch.zeros(1, 1, model.embed_dim, device=device))
    for p in model.parameters():
        p.requires_grad_(mode == "finetune")
    params = [prompt] + ([p for p in model.parameters()] if mode == "finetune" else [])
    opt = torch.optim.AdamW(params, lr=1e-5)
    x = torch.randn(batch, 3, size, size, device=device)
    outside = torch.rand(batch, grid * grid, device=device) < 0.5  # patches fully outside the mask
    text = F.normalize(torch.randn(len(NOUNS), model.num_features, device=device), dim=-1)
    target = torch.randint(0, len(NOUNS), (batch,), device=device)
    model.train()

    def step() -> None:
        with autocast(device):
            tokens = model.patch_embed(x)
            tokens = torch.where(outside[..., None], prompt.to(tokens.dtype), tokens)
            feats = model.forward_head(model.norm(model.blocks(model.norm_pre(model._pos_embed(tokens)))),
                                       pre_logits=True)
            loss = F.cross_entropy(100 * F.normalize(feats.float(), dim=-1) @ text.T, target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rate = timed_rate(step, batch, seconds=seconds, device=device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return rate


def maskformer_check(device: torch.device, quick: bool, *, seconds: float) -> Any:
    """Class-agnostic MaskFormer proposals (``ovseg.maskformer``, random weights at real size):
    images/s of ``model.proposals`` on 640x640 images in bf16 autocast, batch 8 (quick: world-tiny
    at 128 px on whatever device). Needs only torch, timm and transformers."""
    try:
        from ovseg.maskformer import build_maskformer, get_spec
    except ImportError as err:
        return f"not available ({err})"
    spec_name, size, batch = ("world-tiny", 128, 2) if quick else ("ovseg-swin-base", 640, 8)
    spec = get_spec(spec_name)
    model = build_maskformer(spec).to(device).eval()
    model.set_train_text_embeddings(torch.randn(171, spec.clip_text_dim))  # COCO-Stuff's 171 names
    images = torch.randn(batch, 3, size, size, device=device)

    def step() -> None:
        with torch.no_grad(), autocast(device):
            model.proposals(images)

    return {"spec": spec_name, "image_px": size, "batch": batch,
            "images_per_s": timed_rate(step, batch, seconds=seconds, device=device)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/gpu_check.json"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs end to end on a CPU in seconds")
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement (default 3, quick 0.2)")
    args = parser.parse_args(argv)
    device, quick = torch.device(args.device), args.quick
    if not quick and (device.type != "cuda" or not torch.cuda.is_available()):
        raise SystemExit("error: the full-size GPU check needs CUDA (torch.cuda.is_available() is "
                         f"{torch.cuda.is_available()}, --device {args.device}); on a CPU run the tiny sizes: "
                         "bash bench/gpu_check.sh out/gpu_check.json --quick --device cpu")
    seconds = args.seconds or (0.2 if quick else 3.0)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
                              "torch": torch.__version__, "timm": timm.__version__, "quick": quick,
                              "dtype": "bf16 autocast" if device.type == "cuda" else "fp32", "cpus": os.cpu_count()}
    result["matmul_flops_per_s"] = peak = matmul_peak(device, quick=quick, seconds=seconds)
    result["encode"], result["tune"] = {}, {}
    for name in TOWERS:
        model = build_tower(name, quick, device)
        batches = [8, 32] if quick else [64, 256, 512, 1024]
        result["encode"][name] = encode_check(model, device, batches=batches, seconds=seconds, peak=peak)
        tune_batch = 4 if quick else (128 if name == "ViT-B/16" else 64)
        result["tune"][name] = {mode: tune_check(model, device, mode=mode, batch=tune_batch, seconds=seconds)
                                for mode in ("mpt", "finetune")}
        if name == "ViT-B/16":
            result["mining"] = mining_check(model, device, images=8 if quick else 1024, image_px=64 if quick else 512,
                                            masks=32, batch=4 if quick else 16,
                                            workers=0 if quick else min(12, max(1, (os.cpu_count() or 2) - 2)))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["maskformer"] = maskformer_check(device, quick, seconds=seconds)
    result["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"device {result['device']}, {result['dtype']}, matmul {peak / 1e12:.1f} TFLOP/s, {result['seconds']:.0f} s")
    print("| tower | crops/s (batch) | GFLOP/crop | % matmul peak | MPT samples/s | fine-tune samples/s |")
    print("|---|---|---|---|---|---|")
    for name, enc in result["encode"].items():
        tune = result["tune"][name]
        print(f"| {name} | {enc['crops_per_s']:.0f} ({enc['best_batch']}) | {enc['gflops_per_crop']:.1f} | "
              f"{100 * enc['share_of_matmul_peak']:.0f} | {tune['mpt']:.0f} | {tune['finetune']:.0f} |")
    mining = result["mining"]
    print(f"mining loop (ViT-B/16, {mining['scored_masks_per_image']} masks/image, {mining['image_px']} px): "
          f"{mining['images_per_s']:.1f} images/s, loader wait {100 * mining['loader_wait_share']:.0f} %")
    print(f"MaskFormer proposals: {result['maskformer']}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:  # the refusal above: its one line and exit code 2
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
            raise SystemExit(2) from None
        raise
