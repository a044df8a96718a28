"""Hugging Face transformers: `MobileViTForImageClassification`, `MobileViTV2ForImageClassification` and
`SwinForImageClassification`.

Names as the Hub's checkpoints spell them (apple/mobilevit-*, apple/mobilevitv2-*,
microsoft/swin-tiny-patch4-window7-224),
which is also what `save_pretrained` writes. transformers 5 renames Swin's attention and MLP in memory
(`attention.q_proj`, `mlp.fc1`, ...), so a raw `model.state_dict()` uses those: `aliases` maps them
back, mirroring transformers' own `conversion_mapping.py`.
"""
from __future__ import annotations

from .table import QKV, RenameTable


def _mobilevit_rules(prefix: str, block: tuple) -> tuple:
    """The rules both MobileViT versions share: transformers' MobileViTV2 copies v1's stem, stages, MV2
    blocks and conv layers, names included. `block`: the transformer layers' own rules (attention, MLP)."""
    return (
        (r"^stem\.", f"{prefix}.conv_stem."),
        (r"^head\.fc\.", "classifier."),
        # stages 0-1 hold MV2 blocks only; stages 2-4 are [strided MV2, MobileViT(v2) block]
        (r"^stages\.([01])\.(\d+)\.", prefix + r".encoder.layer.\1.layer.\2."),
        (r"^stages\.(\d+)\.0\.", prefix + r".encoder.layer.\1.downsampling_layer."),
        (r"^stages\.(\d+)\.1\.", prefix + r".encoder.layer.\1."),
        # MV2 block
        (r"\.conv1_1x1\.", ".expand_1x1."),
        (r"\.conv2_kxk\.", ".conv_3x3."),
        (r"\.conv3_1x1\.", ".reduce_1x1."),
        # MobileViT(v2) block
        (r"\.conv_1x1\.weight$", ".conv_1x1.convolution.weight"),   # a bare conv here, no BN
        (r"\.transformer\.(\d+)\.", r".transformer.layer.\1."),
        (r"\.norm1\.", ".layernorm_before."),
        (r"\.norm2\.", ".layernorm_after."),
        *block,
        (r"\.norm\.", ".layernorm."),
        (r"\.conv_proj\.", ".conv_projection."),
        # ConvNormAct
        (r"\.conv\.", ".convolution."),
        (r"\.bn\.", ".normalization."),
    )


HF_MOBILEVIT = RenameTable(
    source="hf", family="mobilevit", description="Hugging Face MobileViT",
    rules=(
        (r"^final_conv\.", "mobilevit.conv_1x1_exp."),
        *_mobilevit_rules("mobilevit", block=(
            (r"\.attn\.qkv\.", f".attention.attention.{QKV}."),
            (r"\.attn\.proj\.", ".attention.output.dense."),
            (r"\.mlp\.fc1\.", ".intermediate.dense."),
            (r"\.mlp\.fc2\.", ".output.dense."),
            (r"\.conv_fusion\.", ".fusion."),
        )),
    ),
    qkv_names=("query", "key", "value"),
    signature=r"^mobilevit\.conv_stem\.",
    bgr_stem="stem.conv.weight",            # MobileViTImageProcessor: do_flip_channel_order=True by default
)

HF_MOBILEVITV2 = RenameTable(
    source="hf", family="mobilevitv2", description="Hugging Face MobileViTV2",
    # every 1x1 conv of the v2 transformer is a MobileViTV2ConvLayer (.convolution); no fusion conv
    rules=_mobilevit_rules("mobilevitv2", block=(
        (r"\.attn\.(qkv_proj|out_proj)\.", r".attention.\1.convolution."),
        (r"\.mlp\.fc1\.", ".ffn.conv1.convolution."),
        (r"\.mlp\.fc2\.", ".ffn.conv2.convolution."),
    )),
    signature=r"^mobilevitv2\.conv_stem\.",
    bgr_stem="stem.conv.weight",            # its processor is MobileViTImageProcessor: the same BGR default
)


HF_SWIN = RenameTable(
    source="hf", family="swin", description="Hugging Face Swin",
    rules=(
        (r"^patch_embed\.proj\.", "swin.embeddings.patch_embeddings.projection."),
        (r"^patch_embed\.norm\.", "swin.embeddings.norm."),
        # ours: stage i starts with the merge (timm >= 0.9); theirs: stage i-1 ends with it
        (r"^layers\.(\d+)\.downsample\.", lambda m: f"swin.encoder.layers.{int(m[1]) - 1}.downsample."),
        (r"^layers\.(\d+)\.blocks\.", r"swin.encoder.layers.\1.blocks."),
        (r"\.norm1\.", ".layernorm_before."),
        (r"\.norm2\.", ".layernorm_after."),
        (r"\.attn\.relative_position_bias_table$", ".attention.self.relative_position_bias_table"),
        (r"\.attn\.qkv\.", f".attention.self.{QKV}."),
        (r"\.attn\.proj\.", ".attention.output.dense."),
        (r"\.mlp\.fc1\.", ".intermediate.dense."),
        (r"\.mlp\.fc2\.", ".output.dense."),
        (r"^norm\.", "swin.layernorm."),
        (r"^head\.fc\.", "classifier."),
    ),
    qkv_names=("query", "key", "value"),
    signature=r"^swin\.embeddings\.patch_embeddings\.",
    derived=(r"\.relative_position_index$",),            # a persistent buffer in transformers 4
    aliases=(                                            # transformers 5 in-memory names -> Hub names
        (r"\.attention\.q_proj\.", ".attention.self.query."),
        (r"\.attention\.k_proj\.", ".attention.self.key."),
        (r"\.attention\.v_proj\.", ".attention.self.value."),
        (r"\.attention\.o_proj\.", ".attention.output.dense."),
        (r"\.attention\.relative_position_bias\.relative_position_bias_table$",
         ".attention.self.relative_position_bias_table"),
        (r"\.mlp\.fc1\.", ".intermediate.dense."),
        (r"\.mlp\.fc2\.", ".output.dense."),
    ),
)
