"""The ``sam`` proposal backend on a tiny random SAM built from segment-anything's own modules:
loading, generator settings, filtering, errors, and inside a real mining run and a segmentation."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import webdataset as wds

sam_pkg = pytest.importorskip("segment_anything")

from ovseg.proposals import build_proposals  # noqa: E402
from ovseg.proposals.sam import load_sam, register_sam_builder  # noqa: E402
from pipelines.config.load import ConfigError, load_config  # noqa: E402
from pipelines.mine.config import MineConfig  # noqa: E402
from pipelines.pairs.format import PairMeta, shard_url  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.unit.test_maskformer_proposals import corpus  # noqa: E402,F401 - shared fixture


def tiny_sam() -> torch.nn.Module:
    """SAM's architecture at toy size: 64 px input, a 1-block ViT, 4x4 image embedding."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    size, patch, dim = 64, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=patch, embed_dim=32, depth=1, num_heads=2,
                                      mlp_ratio=2, out_chans=dim, qkv_bias=True, use_rel_pos=True, window_size=0,
                                      global_attn_indexes=(), norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim,
                                 mlp_dim=64, num_heads=2), transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    register_sam_builder("tiny-test", tiny_sam)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


# a random SAM's predicted IoU / stability are arbitrary: the quality gates are opened, the rest is real
OPEN = {"model_type": "tiny-test", "points_per_side": 4, "points_per_batch": 8, "pred_iou_thresh": -10.0,
        "stability_score_thresh": 0.0, "device": "cpu"}


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 72, 3), dtype=np.uint8)


def test_proposals_are_masks_at_image_size_ranked_by_predicted_iou(checkpoint):
    backend = build_proposals("sam", checkpoint=str(checkpoint), max_proposals=5, min_area_frac=0.0, **OPEN)
    assert backend.generator.points_per_batch == 8 and backend.generator.predictor.model is backend.model
    props = backend(_image(0), None)
    assert 0 < len(props) <= 5 and props.masks.shape[1:] == (48, 72) and props.masks.dtype == torch.bool
    assert (props.scores[:-1] >= props.scores[1:]).all() and props.masks.flatten(1).any(1).all()
    strict = build_proposals("sam", checkpoint=str(checkpoint), **{**OPEN, "pred_iou_thresh": 100.0})
    assert len(strict(_image(0), None)) == 0  # the generator's own threshold is applied


def test_missing_checkpoint_says_where_to_get_it_and_bad_files_are_named(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found: .*sam_vit_b_01ec64.pth; download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"):
        load_sam(tmp_path / "sam_vit_b_01ec64.pth")
    with pytest.raises(ValueError, match="cannot tell the SAM model type"):
        load_sam(checkpoint)
    other = tmp_path / "other.pth"
    torch.save({"x": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="does not fit SAM tiny-test"):
        load_sam(other, "tiny-test")
    with pytest.raises(ConfigError, match="proposals.checkpoint.*dl.fbaipublicfiles.com"):
        load_config(MineConfig, REPO / "conf/smoke/mine.yaml", ["proposals.backend=sam", "proposals.checkpoint=/nope/sam.pth"])


def test_sam_backend_inside_a_mining_run(corpus, checkpoint, tmp_path):  # noqa: F811
    from pipelines.mine.model_stage import UnitMiner

    out = str(tmp_path / "pairs")
    cfg = load_config(MineConfig, REPO / "conf/smoke/mine.yaml", [
        f"corpus.url={corpus}/captions.json", f"corpus.images_url={corpus}/images", f"output.url={out}",
        "corpus.images_per_unit=100", "run.images_per_batch=3", "proposals.backend=sam",
        f"proposals.checkpoint={checkpoint}", "proposals.max_proposals=8",
        *[f"proposals.options.{k}={v}" for k, v in OPEN.items() if k != "device"], "proposals.options.min_area_frac=0.0"])
    miner = UnitMiner(cfg)
    [unit] = miner.reader.plan_units()
    stats = miner.mine_unit(unit)
    assert stats["images"] == 3 and 0 < stats["proposals"] <= 3 * 8 and stats["pairs"] == stats["pairs_written"] > 0
    for sample in wds.WebDataset(shard_url(out, 0), shardshuffle=False):
        meta = PairMeta.from_json(sample["json"])
        assert meta.proposal_backend == "sam"


def test_sam_backend_segments(checkpoint, tmp_path):
    from pipelines.segment.config import SegmentConfig
    from pipelines.segment.segmenter import Segmenter

    cfg = load_config(SegmentConfig, REPO / "conf/smoke/segment.yaml", [
        "proposals.backend=sam", f"proposals.checkpoint={checkpoint}",
        *[f"proposals.options.{k}={v}" for k, v in OPEN.items()]])
    result = Segmenter(cfg, ["cat", "sky"])(_image(1))
    assert result.label.shape == (48, 72) and set(result.label.unique().tolist()) <= {-1, 0, 1}
