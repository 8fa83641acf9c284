"""The vocabulary OVSeg's released MaskFormers were trained with, and its CLIP text embeddings.

Class-agnostic proposals score a query by 1 - p(no object), a softmax over a vocabulary plus the
no-object embedding. Our own weight files store their training vocabulary's embeddings; OVSeg's
checkpoints do not, so they get the CLIP text embeddings of COCO-Stuff's 171 classes (OVSeg's
training set, ``coco_2017_train_stuff_sem_seg``; names as in ov-seg's ``register_coco_stuff.py``)
computed with the CLIP the checkpoint itself holds.
"""
from __future__ import annotations

from typing import Sequence

import open_clip
import torch

from ovseg.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, VILD_TEMPLATES, ClipBundle, TextEmbeddingCache, quiet_random_init

COCO_STUFF_171: tuple[str, ...] = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
    'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase',
    'scissors', 'teddy bear', 'hair drier', 'toothbrush', 'banner', 'blanket', 'branch', 'bridge',
    'building-other', 'bush', 'cabinet', 'cage', 'cardboard', 'carpet', 'ceiling-other', 'ceiling-tile',
    'cloth', 'clothes', 'clouds', 'counter', 'cupboard', 'curtain', 'desk-stuff', 'dirt', 'door-stuff',
    'fence', 'floor-marble', 'floor-other', 'floor-stone', 'floor-tile', 'floor-wood', 'flower', 'fog',
    'food-other', 'fruit', 'furniture-other', 'grass', 'gravel', 'ground-other', 'hill', 'house', 'leaves',
    'light', 'mat', 'metal', 'mirror-stuff', 'moss', 'mountain', 'mud', 'napkin', 'net', 'paper', 'pavement',
    'pillow', 'plant-other', 'plastic', 'platform', 'playingfield', 'railing', 'railroad', 'river', 'road',
    'rock', 'roof', 'rug', 'salad', 'sand', 'sea', 'shelf', 'sky-other', 'skyscraper', 'snow', 'solid-other',
    'stairs', 'stone', 'straw', 'structural-other', 'table', 'tent', 'textile-other', 'towel', 'tree',
    'vegetable', 'wall-brick', 'wall-concrete', 'wall-other', 'wall-panel', 'wall-stone', 'wall-tile',
    'wall-wood', 'water-other', 'waterdrops', 'window-blind', 'window-other', 'wood',
)


@torch.no_grad()
def embed_vocabulary(
    clip_model: str,
    clip_state: dict[str, torch.Tensor],
    names: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    templates: Sequence[str] = VILD_TEMPLATES,
) -> torch.Tensor:
    """``[K,D]`` prompt-ensembled, L2-normalised text embeddings of ``names`` with the CLIP ``clip_state``
    (open_clip config ``clip_model``), built on the meta device and given the tensors (no copy)."""
    with quiet_random_init(True), torch.device("meta"):
        model = open_clip.create_model(clip_model, device="meta")
    model.load_state_dict(clip_state, strict=True, assign=True)
    context = model.attn_mask.shape[0]  # the text tower's causal mask is not saved: rebuild it
    model.attn_mask = torch.full((context, context), float("-inf")).triu_(1)
    model = model.to(device).eval()
    bundle = ClipBundle(model=model, tokenizer=open_clip.get_tokenizer(clip_model), image_size=224,
                        mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, name=clip_model)
    return TextEmbeddingCache(bundle, templates).embed(list(names)).float().cpu()
