"""The ``maskformer`` proposal backend: filtering, batching, loading, and inside a real mining run."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import skimage.data
import torch
import webdataset as wds
from PIL import Image

from ovseg.clip import TextEmbeddingCache, load_clip
from ovseg.maskformer import build_maskformer, get_spec
from ovseg.maskformer.vocabulary import embed_vocabulary
from ovseg.maskformer.weights import save_maskformer
from ovseg.proposals import build_proposals, propose_batch
from ovseg.proposals.filtering import area_in_range, greedy_dedup, mask_iou
from ovseg.proposals.maskformer import load_proposal_model
from pipelines.config.load import ConfigError, load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner
from pipelines.pairs.format import PairMeta, shard_url
from pipelines.mine.paths import resolve_local_paths
from tests.conftest import REPO

SPEC = get_spec("world-tiny", num_queries=12, dec_layers=2, hidden_dim=32, nheads=2, dim_feedforward=64,
                conv_dim=32, mask_dim=16, class_embed_hidden_dim=32, clip_text_dim=16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_maskformer(SPEC).eval()
    model.set_train_text_embeddings(torch.randn(5, SPEC.clip_text_dim))
    path = tmp_path_factory.mktemp("maskformer") / "tiny_maskformer.pt"
    save_maskformer(model, path, meta={"vocabulary": ["a", "b", "c", "d", "e"]})
    return path


def _image(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_shared_filters_on_hand_made_masks():
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # 8 px
    masks[1, :2, :3] = True  # 6 px, IoU with 0 = 6/8
    masks[2, 3, 3] = True  # 1 px
    assert mask_iou(masks[:2].flatten(1), masks[:2].flatten(1))[0, 1] == pytest.approx(0.75)
    assert area_in_range(masks, min_frac=2 / 16).tolist() == [True, True, False, False]  # empty never passes
    assert greedy_dedup(masks, iou_threshold=0.7) == [0, 2, 3]
    assert greedy_dedup(masks, iou_threshold=0.8) == [0, 1, 2, 3]
    assert greedy_dedup(masks, iou_threshold=0.8, max_keep=2) == [0, 1]


def test_proposals_are_filtered_scored_and_at_image_size(checkpoint):
    backend = build_proposals("maskformer", checkpoint=str(checkpoint), device="cpu", dedup_iou=0.5,
                              max_proposals=6, min_area_frac=0.01)
    props = backend(_image(0, 90, 70), None)
    assert props.masks.shape[1:] == (90, 70) and props.masks.dtype == torch.bool
    assert 0 < len(props) <= 6
    assert torch.all(props.scores[:-1] >= props.scores[1:]) and 0 <= props.scores.min() and props.scores.max() <= 1
    assert area_in_range(props.masks, min_frac=0.01).all()
    iou = mask_iou(props.masks.flatten(1), props.masks.flatten(1)).fill_diagonal_(0)
    assert iou.max() <= 0.5


def test_a_batch_goes_through_the_network_together_and_matches_single_images(checkpoint):
    backend = build_proposals("maskformer", checkpoint=str(checkpoint), device="cpu", batch_size=4)
    images = [_image(1), _image(2), _image(3)]
    calls = []
    backend.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    batched = propose_batch(backend, images, [None] * 3)
    assert calls == [3]
    for image, props in zip(images, batched):
        single = backend(image, None)
        assert torch.equal(single.masks, props.masks)
        torch.testing.assert_close(single.scores, props.scores)
    # different sizes share one padded pass; each image gets masks at its own size
    mixed = propose_batch(backend, [_image(4, 64, 96), _image(5, 100, 50)], [None, None])
    assert [tuple(p.masks.shape[1:]) for p in mixed] == [(64, 96), (100, 50)]


def test_resizing_to_a_short_side_returns_masks_at_the_original_size(checkpoint):
    backend = build_proposals("maskformer", checkpoint=str(checkpoint), device="cpu", short_side=64)
    props = backend(_image(6, 120, 200), None)
    assert props.masks.shape[1:] == (120, 200)


def test_loading_checks_what_the_file_is(checkpoint, tmp_path):
    assert load_proposal_model(checkpoint).train_text_embeddings.shape == (5, SPEC.clip_text_dim)
    with pytest.raises(ValueError, match="vocabulary= applies to OVSeg"):
        load_proposal_model(checkpoint, vocabulary=["cat"])
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="neither an ovseg-maskformer file"):
        load_proposal_model(other)
    not_ovseg = tmp_path / "not_ovseg.pth"
    torch.save({"model": {"backbone.conv.weight": torch.zeros(1)}}, not_ovseg)
    with pytest.raises(ValueError, match="not an OVSeg checkpoint"):
        load_proposal_model(not_ovseg)
    pickled = tmp_path / "numpy.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": np.zeros(3)}}, pickled)
    with pytest.raises(ValueError, match="objects other than tensors"):
        load_proposal_model(pickled)


def test_vocabulary_embeddings_from_a_checkpoint_clip_equal_the_text_cache():
    """The OVSeg path embeds its vocabulary with the CLIP of the file (built on meta, given the tensors)."""
    torch.manual_seed(0)
    bundle = load_clip("ovseg-tiny-vit")
    names = ["wall-other", "person", "sky-other-merged"]
    expected = TextEmbeddingCache(bundle).embed(names)
    got = embed_vocabulary("ovseg-tiny-vit", bundle.model.state_dict(), names)
    torch.testing.assert_close(got, expected)
    assert open_clip.get_tokenizer("ovseg-tiny-vit") is not None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "images").mkdir()
    Image.fromarray(skimage.data.astronaut()[::4, ::4]).save(root / "images" / "astronaut.jpg")
    Image.fromarray(skimage.data.chelsea()[::3, ::3]).save(root / "images" / "cat.jpg")
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(root / "images" / "coffee.jpg")
    files = ["astronaut.jpg", "cat.jpg", "coffee.jpg"]
    captions = ["an astronaut next to a flag", "a cat on a carpet", "a cup of coffee on a table"]
    data = {"images": [{"id": i + 1, "file_name": f} for i, f in enumerate(files)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "caption": c} for i, c in enumerate(captions)]}
    (root / "captions.json").write_text(json.dumps(data))
    return root


def test_maskformer_backend_inside_a_mining_run(corpus, checkpoint, tmp_path):
    out = str(tmp_path / "pairs")
    cfg = load_config(MineConfig, REPO / "conf/smoke/mine.yaml", [
        f"corpus.url={corpus}/captions.json", f"corpus.images_url={corpus}/images", f"output.url={out}",
        "corpus.images_per_unit=100", "run.images_per_batch=3", "proposals.backend=maskformer",
        f"proposals.checkpoint={checkpoint}", "proposals.max_proposals=8"])
    miner = UnitMiner(cfg)
    calls = []
    miner.cpu.proposals.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    [unit] = miner.reader.plan_units()
    stats = miner.mine_unit(unit)
    assert calls == [3]  # the three images of the batch in one network pass
    assert stats["images"] == 3 and 0 < stats["proposals"] <= 3 * 8
    assert stats["pairs"] == stats["pairs_written"] > 0
    samples = list(wds.WebDataset(shard_url(out, 0), shardshuffle=False))
    assert len(samples) == stats["pairs"]
    for sample in samples:
        meta = PairMeta.from_json(sample["json"])
        assert meta.proposal_backend == "maskformer" and 0 <= meta.proposal_score <= 1


def test_config_needs_a_checkpoint_and_resolves_it_on_the_driver(checkpoint, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="proposals.checkpoint"):
        load_config(MineConfig, REPO / "conf/smoke/mine.yaml", ["proposals.backend=maskformer"])
    monkeypatch.chdir(checkpoint.parent)
    cfg = load_config(MineConfig, str(REPO / "conf/smoke/mine.yaml"),
                      ["proposals.backend=maskformer", f"proposals.checkpoint={checkpoint.name}"])
    assert resolve_local_paths(cfg).proposals.checkpoint == str(checkpoint)
