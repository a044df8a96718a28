"""Model definitions: sizes, names, determinism, export-safe twins, input checks, fusion."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from mobilevit_deploy.errors import InputSizeError, UnknownModelError
from mobilevit_deploy.fusion import fuse
from mobilevit_deploy.models import MODELS, create_model, model_config
from mobilevit_deploy.models import mobilevit, mobilevitv2, swin

# Parameters at 1000 classes and the default image size. MobileViT and swin_tiny equal timm's
# mobilevit_xxs / mobilevit_xs / mobilevit_s / swin_tiny_patch4_window7_224.
PARAMETER_COUNTS = {
    "mobilevit_xxs": 1_272_024,
    "mobilevit_xs": 2_317_848,
    "mobilevit_s": 5_578_632,
    "swin_tiny": 28_288_354,
    "swin_micro": 5_506_996,
    "mobilevitv2_050": 1_370_593,
    "mobilevitv2_075": 2_866_009,
    "mobilevitv2_100": 4_901_841,
}
# MobileViTv2 in the paper (arXiv:2206.02680, Table 8), 1000 classes; ours must be within 0.5%.
MOBILEVITV2_PAPER = {"mobilevitv2_050": 1.37e6, "mobilevitv2_075": 2.87e6, "mobilevitv2_100": 4.90e6}

# Small inputs that keep the whole file fast on two shared cores.
SMALL_SIZES = [
    ("mobilevit_xxs", 64), ("mobilevit_xs", 64), ("mobilevit_s", 64),
    ("swin_tiny", 64), ("swin_micro", 64), ("swin_micro", 96),
    ("mobilevitv2_050", 64), ("mobilevitv2_100", 64), ("mobilevitv2_050", 96),
]



@functools.cache
def shared_model(name: str, image_size: int | None = None) -> nn.Module:
    """A model built once for the tests that only read it (building swin_tiny costs seconds)."""
    return create_model(name, image_size=image_size)


def small_id(case: tuple[str, int]) -> str:
    return f"{case[0]}-{case[1]}"


def images(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_registry_holds_both_families():
    assert set(MODELS) == set(PARAMETER_COUNTS)
    assert {cfg.family for cfg in MODELS.values()} == {"mobilevit", "mobilevitv2", "swin"}


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_count(name):
    model = shared_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", sorted(MOBILEVITV2_PAPER))
def test_mobilevitv2_parameters_match_the_paper(name):
    count = sum(p.numel() for p in shared_model(name).parameters())
    assert abs(count - MOBILEVITV2_PAPER[name]) / MOBILEVITV2_PAPER[name] < 0.005


def test_swin_micro_is_phone_sized():
    assert PARAMETER_COUNTS["swin_micro"] <= 6_000_000


@pytest.mark.parametrize("case", SMALL_SIZES, ids=small_id)
def test_forward_shape(case):
    name, size = case
    model = create_model(name, num_classes=10, image_size=size)
    with torch.no_grad():
        logits = model(images(size))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])   # random init does not collapse inputs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_carries_its_config(name):
    model = shared_model(name, 64)
    assert model.cfg is model_config(name) and model.name == name and model.image_size == 64
    assert model.head.fc.out_features == 1000
    assert not model.training


def test_preprocess_matches_timm_data_configs():
    xxs, tiny = model_config("mobilevit_xxs").preprocess, model_config("swin_tiny").preprocess
    assert (xxs.crop, xxs.resize, xxs.mean, xxs.std, xxs.interpolation) == (
        256, 284, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bicubic")
    assert (tiny.crop, tiny.resize, tiny.mean, tiny.std, tiny.interpolation) == (
        224, 248, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")


# --- names and buffers -------------------------------------------------------------------------------

def test_mobilevit_names_follow_timm():
    keys = set(shared_model("mobilevit_xxs").state_dict())
    for key in [
        "stem.conv.weight", "stem.bn.running_var",
        "stages.0.0.conv1_1x1.conv.weight", "stages.1.2.conv2_kxk.bn.bias", "stages.1.2.conv3_1x1.conv.weight",
        "stages.2.1.conv_kxk.conv.weight", "stages.2.1.conv_1x1.weight",
        "stages.3.1.transformer.3.attn.qkv.bias", "stages.4.1.transformer.2.mlp.fc2.weight",
        "stages.4.1.norm.weight", "stages.4.1.conv_proj.bn.weight", "stages.4.1.conv_fusion.conv.weight",
        "final_conv.conv.weight", "head.fc.weight",
    ]:
        assert key in keys, key
    assert "stages.2.1.conv_1x1.bias" not in keys


def test_mobilevitv2_names_follow_timm():
    keys = set(shared_model("mobilevitv2_050").state_dict())
    for key in [
        "stem.conv.weight", "stem.bn.running_mean",
        "stages.0.0.conv1_1x1.conv.weight", "stages.1.1.conv2_kxk.conv.weight", "stages.2.0.conv3_1x1.bn.bias",
        "stages.2.1.conv_kxk.conv.weight", "stages.2.1.conv_1x1.weight",
        "stages.2.1.transformer.1.norm1.weight", "stages.3.1.transformer.3.attn.qkv_proj.weight",
        "stages.3.1.transformer.0.attn.out_proj.bias", "stages.4.1.transformer.2.mlp.fc1.weight",
        "stages.4.1.transformer.2.norm2.bias", "stages.4.1.norm.weight", "stages.4.1.conv_proj.bn.weight",
        "head.fc.weight",
    ]:
        assert key in keys, key
    # no fusion conv, no final 1x1 conv, no bias on the block's 1x1 conv (timm: Identity / bias=False)
    assert not [k for k in keys if "conv_fusion" in k or k.startswith("final_conv") or k == "stages.2.1.conv_1x1.bias"]
    model = shared_model("mobilevitv2_050")
    assert model.stages[4][1].transformer[0].attn.qkv_proj.weight.shape == (1 + 2 * 128, 128, 1, 1)
    assert model.stages[2][1].conv_kxk.conv.groups == 128                # depthwise local conv
    assert model.head.fc.in_features == 256


def test_swin_names_follow_timm():
    keys = set(shared_model("swin_tiny").state_dict())
    for key in [
        "patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight",
        "layers.1.downsample.norm.weight", "layers.1.downsample.reduction.weight",
        "layers.2.blocks.5.attn.relative_position_bias_table", "layers.3.blocks.1.mlp.fc1.bias",
        "norm.weight", "head.fc.bias",
    ]:
        assert key in keys, key
    assert not any(key.startswith("layers.0.downsample") for key in keys)
    assert "layers.1.downsample.reduction.bias" not in keys


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_holds_no_derived_buffers(name):
    model = shared_model(name, 64)
    keys = list(model.state_dict())
    assert not [k for k in keys if "relative_position_index" in k or "attn_mask" in k]
    if model.cfg.family == "swin":   # the buffers exist, they just stay out of checkpoints
        buffers = dict(model.named_buffers())
        assert "layers.0.blocks.0.attn.relative_position_index" in buffers
        assert "layers.0.blocks.1.attn_mask" in buffers


# --- factory ----------------------------------------------------------------------------------------

def test_create_model_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = create_model("mobilevit_xxs").state_dict()
    assert torch.equal(torch.get_rng_state(), before)   # fork_rng undid what layer constructors drew
    torch.manual_seed(456)
    second = create_model("mobilevit_xxs").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other_seed = create_model("mobilevit_xxs", seed=1).state_dict()
    assert not torch.equal(first["head.fc.weight"], other_seed["head.fc.weight"])


def test_swin_init_is_deterministic():
    first = shared_model("swin_micro", 64).state_dict()
    second = create_model("swin_micro", image_size=64).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    table = first["layers.0.blocks.0.attn.relative_position_bias_table"]
    assert 0.005 < table.std() < 0.05   # trunc_normal(0.02), not left at zero


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError) as error:
        create_model("mobilevit_x")
    message = str(error.value)
    assert all(name in message for name in MODELS)
    assert "did you mean 'mobilevit_xs'" in message
    with pytest.raises(UnknownModelError):
        model_config("resnet50")


@pytest.mark.parametrize("name,size", [
    ("mobilevit_xxs", 100), ("mobilevit_xxs", 80), ("mobilevit_s", 32), ("mobilevit_xs", 0),
    ("swin_tiny", 100), ("swin_micro", 16), ("swin_micro", 200), ("swin_tiny", 224.0),
])
def test_bad_image_size_is_refused(name, size):
    with pytest.raises(InputSizeError, match=f"{name} takes square images whose side is a multiple of"):
        create_model(name, image_size=size)


def test_image_size_error_reads_well():
    with pytest.raises(InputSizeError) as error:
        create_model("mobilevit_xxs", image_size=100)
    assert str(error.value) == (
        "mobilevit_xxs takes square images whose side is a multiple of 32, at least 64; got 100")


def test_forward_refuses_inputs_the_model_cannot_take():
    with pytest.raises(InputSizeError, match="multiple of 32"):
        create_model("mobilevit_xxs", image_size=64)(torch.zeros(1, 3, 80, 80))
    with pytest.raises(InputSizeError, match=r"\[B, 3, S, S\]"):
        create_model("mobilevit_xxs", image_size=64)(torch.zeros(1, 3, 64, 128))
    with pytest.raises(InputSizeError, match="built for"):
        create_model("swin_micro", image_size=64)(torch.zeros(1, 3, 96, 96))


def test_mobilevit_resizes_maps_that_patches_do_not_tile():
    """At 96 the last MobileViT block sees a 3x3 map: like timm, it resizes to 4x4 and back.
    The path is taken (bilinear resize in the graph) and the output stays finite and input-dependent."""
    model = create_model("mobilevit_xxs", image_size=96)
    block = model.stages[4][-1]
    seen = {}
    block.transformer.register_forward_hook(lambda m, i, o: seen.update(tokens=i[0].shape))
    with torch.no_grad():
        a, b = model(images(96, batch=2))
    assert seen["tokens"] == (2 * 4, 4, 96)                 # [B*P, N, D] on the 4x4 resized map
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_mobilevit_takes_other_valid_sizes_than_it_was_built_for():
    model = create_model("mobilevit_xxs", image_size=64)
    with torch.no_grad():
        assert model(images(128, batch=1)).shape == (1, 1000)


def test_num_classes_rebuilds_the_head():
    model = create_model("swin_micro", num_classes=7, image_size=64)
    assert model.head.fc.out_features == 7 and model.head.fc.in_features == 384


# --- export-safe twins equal their plain references --------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 8, 8, 8), (1, 5, 4, 6), (3, 4, 2, 2)])
def test_unfold_and_fold_twins_equal_reference(shape):
    x = torch.randn(*shape)
    patches = mobilevit.unfold_patches(x, 2)
    assert torch.equal(patches, mobilevit.unfold_patches_reference(x, 2))
    batch, dim, height, width = shape
    assert patches.shape == (batch * 4, height * width // 4, dim)
    folded = mobilevit.fold_patches(patches, 2, height, width)
    assert torch.equal(folded, mobilevit.fold_patches_reference(patches, 2, height, width))
    assert torch.equal(folded, x)


def test_unfold_groups_pixel_i_of_every_patch():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = mobilevit.unfold_patches(x, 2)                            # [4, 4, 1]
    # sequence 0: the top-left pixel of each of the four 2x2 patches, patches in row-major order
    assert patches[0, :, 0].tolist() == [0.0, 2.0, 8.0, 10.0]
    assert patches[3, :, 0].tolist() == [5.0, 7.0, 13.0, 15.0]


@pytest.mark.parametrize("shift", [1, 3, -3, 5, -6])
def test_roll_twin_equals_torch_roll(shift):
    x = torch.randn(2, 7, 9, 3)
    assert torch.equal(swin.roll_hw(x, shift), torch.roll(x, (shift, shift), dims=(1, 2)))


@pytest.mark.parametrize("size,window", [(14, 7), (21, 7), (8, 4), (4, 4)])
def test_window_partition_twins_equal_reference(size, window):
    x = torch.randn(2, size, size, 6)
    windows = swin.window_partition(x, window)
    assert torch.equal(windows, swin.window_partition_reference(x, window))
    assert windows.shape == (2 * (size // window) ** 2, window * window, 6)
    back = swin.window_reverse(windows, window, size, size)
    assert torch.equal(back, swin.window_reverse_reference(windows, window, size, size))
    assert torch.equal(back, x)


def test_patch_merging_twin_equals_reference_and_timm_order():
    x = torch.randn(2, 8, 6, 5)
    merged = swin.merge_patches(x)
    assert torch.equal(merged, swin.merge_patches_reference(x))
    timm_order = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    assert torch.equal(merged, timm_order)


@pytest.mark.parametrize("shape", [(2, 8, 8, 8), (1, 5, 4, 6), (3, 4, 2, 2)])
def test_mobilevitv2_unfold_and_fold_twins_equal_reference(shape):
    x = torch.randn(*shape)
    patches = mobilevitv2.unfold_patches(x, 2)
    assert torch.equal(patches, mobilevitv2.unfold_patches_reference(x, 2))
    batch, dim, height, width = shape
    assert patches.shape == (batch, dim, 4, height * width // 4)
    folded = mobilevitv2.fold_patches(patches, 2, height, width)
    assert torch.equal(folded, mobilevitv2.fold_patches_reference(patches, 2, height, width))
    assert torch.equal(folded, x)


def test_mobilevitv2_unfold_puts_pixel_i_of_every_patch_on_one_row():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = mobilevitv2.unfold_patches(x, 2)                          # [1, 1, P=4, N=4]
    assert patches[0, 0, 0].tolist() == [0.0, 2.0, 8.0, 10.0]           # top-left pixel of each patch
    assert patches[0, 0, 3].tolist() == [5.0, 7.0, 13.0, 15.0]


def test_separable_attention_is_the_papers_formula():
    """softmax over the N patches of one score per token, a context vector sum(scores * keys), and
    ReLU(values) * context, written out by hand on a tiny layer."""
    torch.manual_seed(0)
    attn = mobilevitv2.SeparableSelfAttention(3).eval()
    x = torch.randn(2, 3, 4, 5)                                         # [B, D, P, N]
    w, b = attn.qkv_proj.weight[:, :, 0, 0], attn.qkv_proj.bias
    qkv = torch.einsum("od,bdpn->bopn", w, x) + b[None, :, None, None]
    scores = torch.exp(qkv[:, :1]) / torch.exp(qkv[:, :1]).sum(-1, keepdim=True)
    context = (qkv[:, 1:4] * scores).sum(-1, keepdim=True)
    mixed = qkv[:, 4:].clamp(min=0) * context
    expected = torch.einsum("od,bdpn->bopn", attn.out_proj.weight[:, :, 0, 0], mixed) + attn.out_proj.bias[None, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)
    # each token's output depends on the other patches only through the context vector
    y = x.clone()
    y[..., 1:] = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(attn(x)[..., 0], attn(y)[..., 0])


def test_mobilevitv2_norm_is_a_layer_norm_over_channels_and_tokens():
    norm = mobilevitv2.GroupNorm1(6)
    x = torch.randn(2, 6, 4, 3) * 3 + 1
    expected = torch.nn.functional.layer_norm(x, x.shape[1:], eps=norm.eps)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_mobilevitv2_with_plain_patches_computes_the_same(monkeypatch):
    model, x = shared_model("mobilevitv2_050", 64), images(64)
    with torch.no_grad():
        twin = model(x)
        monkeypatch.setattr(mobilevitv2, "unfold_patches", mobilevitv2.unfold_patches_reference)
        monkeypatch.setattr(mobilevitv2, "fold_patches", mobilevitv2.fold_patches_reference)
        plain = model(x)
    torch.testing.assert_close(twin, plain, rtol=0, atol=1e-6)


def test_mobilevitv2_transformer_linears_start_small_like_linear_layers():
    """The 1x1 convs inside the transformer are its linear layers: trunc-normal std 0.02 (not the conv
    init), so a random model is not chaotic; the local convs keep the conv init."""
    model = shared_model("mobilevitv2_050")
    layer = model.stages[3][1].transformer[0]
    for conv in (layer.attn.qkv_proj, layer.attn.out_proj, layer.mlp.fc1, layer.mlp.fc2):
        assert 0.015 < float(conv.weight.detach().std()) < 0.025
    assert float(model.stages[3][1].conv_kxk.conv.weight.detach().std()) > 0.2      # sqrt(2 / 9) for a depthwise 3x3


def test_mobilevit_with_plain_patches_computes_the_same(monkeypatch):
    model, x = shared_model("mobilevit_xxs", 64), images(64)
    with torch.no_grad():
        twin = model(x)
        monkeypatch.setattr(mobilevit, "unfold_patches", mobilevit.unfold_patches_reference)
        monkeypatch.setattr(mobilevit, "fold_patches", mobilevit.fold_patches_reference)
        plain = model(x)
    torch.testing.assert_close(twin, plain, rtol=0, atol=1e-6)


def test_swin_with_plain_roll_and_windows_computes_the_same(monkeypatch):
    model, x = shared_model("swin_micro", 96), images(96)
    with torch.no_grad():
        twin = model(x)
        monkeypatch.setattr(swin, "roll_hw", lambda t, s: torch.roll(t, (s, s), dims=(1, 2)))
        monkeypatch.setattr(swin, "window_partition", swin.window_partition_reference)
        monkeypatch.setattr(swin, "window_reverse", swin.window_reverse_reference)
        monkeypatch.setattr(swin, "merge_patches", swin.merge_patches_reference)
        plain = model(x)
    torch.testing.assert_close(twin, plain, rtol=0, atol=1e-6)


# --- Swin windows, shifts and masks ------------------------------------------------------------------

def test_windows_shrink_and_shift_drops_on_small_maps():
    model = shared_model("swin_tiny", 64)                               # maps 16, 8, 4, 2
    blocks = [stage.blocks[1] for stage in model.layers]                # the would-be shifted blocks
    assert [(b.resolution, b.window, b.shift, b.padded) for b in blocks] == [
        (16, 7, 3, 21), (8, 7, 3, 14), (4, 4, 0, 4), (2, 2, 0, 2)]
    assert blocks[2].attn_mask is None and blocks[3].attn_mask is None
    assert model.layers[3].blocks[0].attn.relative_position_bias_table.shape == (9, 24)
    default = shared_model("swin_tiny")                                 # maps 56, 28, 14, 7
    assert [stage.blocks[1].shift for stage in default.layers] == [3, 3, 3, 0]


def test_shifted_window_mask_blocks_cross_region_attention():
    mask = swin.shifted_window_mask(14, 14, 7, 3)                       # [4, 49, 49]
    assert mask.shape == (4, 49, 49)
    assert torch.equal(mask[0], torch.zeros(49, 49))                    # top-left window: one region
    assert set(mask.unique().tolist()) == {0.0, swin.MASKED}
    # the bottom-right window holds four regions of 4x4, 4x3, 3x4 and 3x3 tokens; each token may
    # attend only inside its own region
    allowed = (mask[3] == 0).sum(dim=1)
    assert sorted(set(allowed.tolist())) == [9, 12, 16]


def test_swin_shift_and_mask_change_the_output():
    block = create_model("swin_micro", image_size=64).layers[0].blocks[1]  # 16x16 map, window 7, shift 3
    assert block.shift == 3 and block.attn_mask is not None
    x = torch.randn(1, 16, 16, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = block(x)
        mask = block.attn_mask
        block.attn_mask = torch.zeros_like(mask)
        without_mask = block(x)
        block.attn_mask, block.shift = None, 0
        without_shift = block(x)
        block.attn_mask, block.shift = mask, 3
    assert not torch.allclose(reference, without_mask, atol=1e-4)
    assert not torch.allclose(reference, without_shift, atol=1e-4)


# --- fusion -----------------------------------------------------------------------------------------

def randomize_batchnorms(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics, so that fusion has something to fold."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 1 + 0.2 * torch.randn(n, generator=generator)
            module.bias.data = 0.1 * torch.randn(n, generator=generator)
            module.running_mean = 0.1 * torch.randn(n, generator=generator)
            module.running_var = 0.5 + torch.rand(n, generator=generator)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fusion_keeps_the_logits(name):
    model = create_model(name, image_size=64)
    randomize_batchnorms(model)
    x = images(64)
    result = fuse(model)
    with torch.no_grad():
        expected, fused = model(x), result.model(x)
    if model.cfg.family.startswith("mobilevit"):
        assert result.fused_pairs > 0
        assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    scale = expected.abs().max().clamp(min=1.0)
    assert (fused - expected).abs().max() <= 1e-5 * scale


def test_a_swin_weights_file_trained_at_a_small_side_loads_as_trained_there():
    """The swin_micro digits checkpoint (trained at 64: windows clamped to 7, 7, 4, 2) given as a user's
    --weights file at 64 computes what the reference model computes; the control: a file whose tables are
    those of a Swin trained at 224 (7 everywhere) is still taken as trained at 224 and its tables resized."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.checkpoints import REFERENCE_CHECKPOINTS
    from mobilevit_deploy.models import trained_size

    path = REFERENCE_CHECKPOINTS["swin_micro"].path
    as_file = pipeline.prepare_model("swin_micro", weights=path, image_size=64)
    reference = pipeline.prepare_model("swin_micro", image_size=64)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(as_file.model(x), reference.model(x))
    assert any("taken as trained at 64x64" in note for note in as_file.notes)

    at_224 = create_model("swin_micro", num_classes=10, image_size=224).state_dict()
    assert [trained_size("swin_micro", at_224, side) for side in (64, 224, 256)] == [224, 224, 224]   # 7 at 256 too
    assert trained_size("swin_micro", reference.model.state_dict(), 64) == 64
    assert trained_size("mobilevit_xxs", reference.model.state_dict(), 64) == 256     # MobileViT: every side
