"""CLIP loading and the prompt-ensembled text-embedding cache (tiny random model)."""
import pytest
import torch
import torch.nn.functional as F

from ovseg.clip import VILD_TEMPLATES, ClipLoadError, TextEmbeddingCache, encode_images, load_clip


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return load_clip("ovseg-tiny-vit")


def test_tiny_config_is_registered(bundle):
    assert bundle.image_size == 64 and bundle.embed_dim == 64
    assert bundle.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_text_cache_is_the_renormalised_mean_of_template_embeddings(bundle):
    cache = TextEmbeddingCache(bundle)
    emb = cache.embed(["sea lion", "cat", "sea lion"])
    assert emb.shape == (3, 64) and len(cache) == 2
    assert torch.allclose(emb[0], emb[2])
    with torch.no_grad():
        per_template = F.normalize(bundle.model.encode_text(bundle.tokenizer([t.format("cat") for t in VILD_TEMPLATES])), dim=-1)
    expected = F.normalize(per_template.mean(0), dim=-1)
    assert torch.allclose(emb[1], expected, atol=1e-5)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert len(VILD_TEMPLATES) == 14  # ov-seg's VILD_PROMPT
    assert VILD_TEMPLATES[9:] == ("This is a photo of a medium {}.", "This is a photo of a large {}.",
                                  "There is a small {} in the scene.", "There is a medium {} in the scene.",
                                  "There is a large {} in the scene.")


def test_single_template_differs_from_ensemble(bundle):
    single = TextEmbeddingCache(bundle, templates=("a photo of a {}.",)).embed(["cat"])
    ensemble = TextEmbeddingCache(bundle).embed(["cat"])
    assert not torch.allclose(single, ensemble)
    with pytest.raises(ValueError):
        TextEmbeddingCache(bundle, templates=("no placeholder",))


def test_encode_images_is_normalised_and_batched(bundle):
    images = torch.randn(5, 3, 64, 64)
    a = encode_images(bundle, images, batch_size=2)
    b = encode_images(bundle, images, batch_size=5)
    assert a.shape == (5, 64) and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_local_checkpoint_round_trip_and_errors(bundle, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in bundle.model.state_dict().items()}}, path)
    again = load_clip("ovseg-tiny-vit", checkpoint=str(path))
    images = torch.randn(2, 3, 64, 64)
    assert torch.allclose(encode_images(bundle, images), encode_images(again, images))
    assert again.checkpoint == str(path)
    with pytest.raises(ClipLoadError, match="not found"):
        load_clip("ovseg-tiny-vit", checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ClipLoadError, match="unknown CLIP model"):
        load_clip("ViT-Z-99")
    torch.save({"visual.nope": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ClipLoadError, match="does not fit"):
        load_clip("ovseg-tiny-vit", checkpoint=str(tmp_path / "bad.pt"))
