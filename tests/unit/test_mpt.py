"""Mask prompt tuning: replacement semantics, equivalence with plain CLIP, trainable parameters."""
from __future__ import annotations

import pytest
import torch
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer

from ovseg.mpt import MaskPrompt, MaskPromptCLIP, MaskPromptedViT, patch_keep_mask

TEXT_CFG = {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1}


def tiny_clip(**vision) -> CLIP:
    cfg = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16}
    cfg.update(vision)
    torch.manual_seed(0)
    return CLIP(embed_dim=24, vision_cfg=cfg, text_cfg=TEXT_CFG).eval()


def hand_mask() -> tuple[torch.Tensor, list[bool]]:
    """A [1,32,32] mask on a 4x4 grid of 8 px patches and the hand-written keep list."""
    m = torch.zeros(1, 32, 32, dtype=torch.bool)
    m[0, 0:8, 0:8] = True  # patch (0,0) fully inside
    m[0, 7, 15] = True  # patch (0,1): a single pixel (its last) inside -> kept
    m[0, 16:24, 24:32] = True  # patch (2,3)
    m[0, 31, 0] = True  # patch (3,0): one corner pixel
    keep = [False] * 16
    for r, c in [(0, 0), (0, 1), (2, 3), (3, 0)]:
        keep[r * 4 + c] = True
    return m, keep


def test_patch_keep_mask_any_pixel_keeps():
    m, keep = hand_mask()
    assert patch_keep_mask(m, (8, 8))[0].tolist() == keep
    assert patch_keep_mask(m.unsqueeze(1).float(), (8, 8))[0].tolist() == keep
    soft = m.float() * 0.4  # float masks: > 0.5 is inside
    assert not patch_keep_mask(soft, (8, 8)).any()


def test_replacement_points_and_positions():
    """Mask tokens replace the masked patch tokens after the patch embedding and after blocks
    1..depth-1 (never the class token), and nowhere else."""
    model = tiny_clip(layers=4)
    visual = model.visual
    prompt = MaskPrompt(visual, depth=3)
    with torch.no_grad():
        for level in range(3):
            prompt.mask_embedding[level] = 100.0 + level + torch.arange(16.0).view(16, 1)
    mask, keep = hand_mask()
    keep_t = torch.tensor(keep)
    images = torch.randn(1, 3, 32, 32)

    block_in: list[torch.Tensor] = []
    block_out: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda mod, args: block_in.append(args[0].clone()))
             for b in visual.transformer.resblocks]
    hooks += [b.register_forward_hook(lambda mod, args, out: block_out.append(out.clone()))
              for b in visual.transformer.resblocks]
    with torch.no_grad():
        prompt(visual, images, mask)
        for h in hooks:
            h.remove()

        # level 0: replaced before class token / positional embedding / ln_pre
        patches = visual.conv1(images).flatten(2).transpose(1, 2)[0]
        patches[~keep_t] = prompt.mask_embedding[0][~keep_t]
        x = torch.cat([visual.class_embedding.view(1, -1), patches]) + visual.positional_embedding
        torch.testing.assert_close(block_in[0][0], visual.ln_pre(x))

    for i in range(1, 4):
        expected = block_out[i - 1].clone()
        if i < 3:  # after blocks 1 and 2 (depth 3)
            expected[0, 1:][~keep_t] = prompt.mask_embedding[i][~keep_t]
            assert torch.equal(block_in[i][0, 1:][~keep_t], prompt.mask_embedding[i][~keep_t])
        assert torch.equal(block_in[i], expected), f"block {i} input"
        assert torch.equal(block_in[i][0, 0], block_out[i - 1][0, 0]), "class token untouched"
        assert torch.equal(block_in[i][0, 1:][keep_t], block_out[i - 1][0, 1:][keep_t])
    # block 3's input (after block 3 = depth) is block 3's output unchanged
    assert torch.equal(block_in[3], block_out[2])


def test_fully_masked_crop_ignores_the_image():
    model = tiny_clip()
    prompt = MaskPrompt(model.visual, depth=1)
    masks = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    with torch.no_grad():
        out = prompt(model.visual, torch.randn(2, 3, 32, 32), masks)
    torch.testing.assert_close(out[0], out[1])


VARIANTS = [
    {},
    {"pool_type": "avg"},
    {"no_ln_pre": True},
    {"final_ln_after_pool": True},
    {"ls_init_value": 0.1},
    {"qk_norm": True},  # custom residual blocks
    {"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
    {"image_size": [32, 48]},  # non-square grid 4x6
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v) or "default")
def test_all_ones_mask_equals_plain_clip(variant):
    model = tiny_clip(**variant)
    wrapped = MaskPromptCLIP(model, depth=3)
    h, w = model.visual.image_size
    images = torch.randn(3, 3, h, w)
    with torch.no_grad():
        plain = model.encode_image(images)
        ones = wrapped.encode_image(images, torch.ones(3, h, w, dtype=torch.bool), normalize=False)
        none = wrapped.encode_image(images, None, normalize=False)
        some = torch.ones(3, h, w, dtype=torch.bool)
        some[:, : h // 2] = False
        masked = wrapped.encode_image(images, some, normalize=False)
    assert torch.allclose(ones, plain, atol=1e-6, rtol=0)
    assert torch.allclose(none, plain, atol=1e-6, rtol=0)
    assert not torch.allclose(masked, plain, atol=1e-3)


def test_grad_checkpointing_and_bf16_autocast():
    model = tiny_clip()
    vit = MaskPromptedViT(model.visual, depth=2)
    images, masks = torch.randn(2, 3, 32, 32), torch.rand(2, 32, 32) > 0.995
    ref = vit(images, masks)
    model.visual.set_grad_checkpointing(True)
    torch.testing.assert_close(vit(images, masks), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vit(images, masks)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.1)


def _backward(wrapped: MaskPromptCLIP) -> None:
    images, masks = torch.randn(4, 3, 32, 32), torch.ones(4, 32, 32, dtype=torch.bool)
    masks[:, 16:] = False  # bottom half of the patches replaced
    text = wrapped.encode_text(torch.randint(0, 1000, (4, 16)))
    img = wrapped.encode_image(images, masks)
    loss = (wrapped.logit_scale.exp() * img @ text.T).logsumexp(-1).mean()
    loss.backward()


def test_mpt_mode_only_prompt_gets_gradients():
    wrapped = MaskPromptCLIP(tiny_clip(), depth=2)
    names = wrapped.set_trainable("mpt", train_logit_scale=False)
    assert names == ["prompt.mask_embedding"]
    _backward(wrapped)
    with_grad = {n for n, p in wrapped.named_parameters() if p.grad is not None}
    assert with_grad == {"prompt.mask_embedding"}
    assert wrapped.mask_embedding.grad.abs().sum() > 0


def test_finetune_modes_trainable_sets():
    wrapped = MaskPromptCLIP(tiny_clip(), depth=2)
    names = set(wrapped.set_trainable("finetune"))
    assert "clip.logit_scale" in names and "prompt.mask_embedding" not in names
    assert all(n.startswith("clip.visual.") or n == "clip.logit_scale" for n in names)
    _backward(wrapped)
    grads = {n for n, p in wrapped.named_parameters() if p.grad is not None}
    assert "clip.visual.conv1.weight" in grads and not any(n.startswith("clip.transformer") for n in grads)
    both = set(wrapped.set_trainable("finetune+mpt", train_logit_scale=False))
    assert "prompt.mask_embedding" in both and "clip.visual.proj" in both
    with pytest.raises(ValueError):
        wrapped.set_trainable("lora")


def test_prompt_shapes_for_real_geometries():
    """B/16 and L/14 at 224 px (blocks cut to 3 to stay small): OVSeg's [3, grid², width]."""
    for patch, width, grid in [(16, 768, 14), (14, 1024, 16)]:
        visual = VisionTransformer(224, patch, width, layers=3, heads=width // 64, mlp_ratio=0.25)
        assert MaskPrompt(visual, depth=3).mask_embedding.shape == (3, grid * grid, width)


def test_bad_arguments():
    model = tiny_clip()
    with pytest.raises(ValueError):
        MaskPrompt(model.visual, depth=4)  # only 3 layers
    with pytest.raises(TypeError):
        MaskPrompt(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        MaskPrompt(model.visual, init="uniform")
    prompt = MaskPrompt(model.visual, depth=1, init="zeros")
    assert prompt.mask_embedding.abs().sum() == 0
    with pytest.raises(ValueError):
        prompt(model.visual, torch.randn(1, 3, 32, 32), torch.ones(1, 16, 16, dtype=torch.bool))


@pytest.mark.parametrize("name", ["ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "coca_ViT-B-32",
                                  "ViT-B-16-quickgelu"])
def test_open_clip_named_configs(name):
    """Real open_clip geometries (blocks cut to 2 to stay small): all-ones mask equals plain, and
    the prompt has OVSeg's [depth, grid², width] shape."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(name)
    vision = dict(cfg["vision_cfg"], layers=2)
    torch.manual_seed(0)
    visual = _build_vision_tower(cfg["embed_dim"], vision, quick_gelu=cfg.get("quick_gelu", False)).eval()
    prompt = MaskPrompt(visual, depth=2)
    size, patch = vision["image_size"], vision["patch_size"]
    assert prompt.mask_embedding.shape == (2, (size // patch) ** 2, vision["width"])
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        plain = visual(images)
        plain = plain[0] if isinstance(plain, tuple) else plain
        ones = prompt(visual, images, torch.ones(1, size, size, dtype=torch.bool))
    assert torch.allclose(ones, plain, atol=1e-5, rtol=0)


def test_non_vit_tower_is_refused():
    from open_clip.modified_resnet import ModifiedResNet

    with pytest.raises(TypeError):
        MaskPrompt(ModifiedResNet(layers=(1, 1, 1, 1), output_dim=32, heads=2, image_size=64, width=16))
