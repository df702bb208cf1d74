"""TinyViT image encoder as used by MobileSAM and LiteMedSAM.

The building blocks (convolution+BN, MBConv, window attention with learned relative biases,
patch merging) come from timm's TinyViT implementation. MobileSAM changes the classification
network in three ways that this module adds on top:

* the last patch merging keeps the resolution (stride 1) so the output grid is 64x64;
* a SAM-style neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) maps 320 channels to 256;
* no classification head (the official checkpoint still carries one; it is ignored).

LiteMedSAM additionally replaces the stride-4 patch embedding by two 1x1 convolutions so that a
256x256 input also yields a 64x64 grid.

The official checkpoints name modules differently from timm (``layers.N`` vs ``stages.N``, the
patch merging living at the end of the previous stage, ``c`` vs ``conv``). A load-state-dict
pre-hook translates the official layout, so ``load_state_dict`` accepts both.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch
from segment_anything.modeling.common import LayerNorm2d
from timm.models.tiny_vit import ConvLayer, ConvNorm, PatchEmbed, PatchMerging, TinyVitStage
from torch import nn

__all__ = ["TinyViTEncoder", "official_to_timm_keys", "OFFICIAL_UNUSED_PREFIXES"]

# Keys of the official checkpoints that belong to the unused ImageNet head.
OFFICIAL_UNUSED_PREFIXES = ("norm_head.", "head.")


class _PointwisePatchEmbed(nn.Module):
    """LiteMedSAM's patch embedding: two 1x1 conv+BN with GELU, no downsampling."""

    stride = 1

    def __init__(self, in_chs: int, out_chs: int, act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_chs, out_chs // 2, 1, 1, 0)
        self.act = act_layer()
        self.conv2 = ConvNorm(out_chs // 2, out_chs, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class _PatchMergingKeepSize(PatchMerging):
    """Patch merging whose depthwise conv has stride 1 (MobileSAM's last stage)."""

    def __init__(self, dim: int, out_dim: int, act_layer: type[nn.Module], **kwargs: Any) -> None:
        super().__init__(dim=dim, out_dim=out_dim, act_layer=act_layer, **kwargs)
        self.conv2 = ConvNorm(out_dim, out_dim, 3, 1, 1, groups=out_dim)


class TinyViTEncoder(nn.Module):
    """TinyViT backbone + SAM neck producing ``(B, out_chans, 64, 64)`` embeddings.

    Args:
        img_size: side of the square input the encoder expects (1024 MobileSAM, 256 LiteMedSAM).
        embed_dims, depths, num_heads, window_sizes: per-stage configuration.
        patch_stride: 4 for the standard stride-4 stem, 1 for LiteMedSAM's pointwise stem.
        out_chans: channels of the output embedding (SAM's prompt encoder expects 256).
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        patch_stride: int = 4,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        act = nn.GELU
        if patch_stride == 4:
            self.patch_embed: nn.Module = PatchEmbed(in_chans, embed_dims[0], act)
        elif patch_stride == 1:
            self.patch_embed = _PointwisePatchEmbed(in_chans, embed_dims[0], act)
        else:
            raise ValueError(f"patch_stride must be 1 or 4, got {patch_stride}")

        stages: list[nn.Module] = [
            ConvLayer(dim=embed_dims[0], depth=depths[0], act_layer=act, conv_expand_ratio=mbconv_expand_ratio)
        ]
        for i in range(1, len(depths)):
            last = i == len(depths) - 1
            stages.append(
                TinyVitStage(
                    dim=embed_dims[i - 1],
                    out_dim=embed_dims[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    downsample=_PatchMergingKeepSize if last else PatchMerging,
                    local_conv_size=local_conv_size,
                    act_layer=act,
                )
            )
        self.stages = nn.Sequential(*stages)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self._register_load_state_dict_pre_hook(_accept_official_layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stages(self.patch_embed(x)))


_PATCH_EMBED = {"seq.0.": "conv1.", "seq.2.": "conv2."}


def official_to_timm_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official MobileSAM/LiteMedSAM TinyViT state dict to this module's layout.

    Keys of the ImageNet head and the non-persistent ``attention_bias_idxs`` are dropped.
    Keys already in this module's layout pass through unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(OFFICIAL_UNUSED_PREFIXES) or key.endswith("attention_bias_idxs"):
            continue
        out[_rename(key)] = value
    return out


def _rename(key: str) -> str:
    if key.startswith("patch_embed.seq."):
        for old, new in _PATCH_EMBED.items():
            if key.startswith("patch_embed." + old):
                key = "patch_embed." + new + key[len("patch_embed." + old):]
                break
    m = re.match(r"layers\.(\d+)\.(blocks|downsample)\.(.*)", key)
    if m:
        layer, part, rest = int(m.group(1)), m.group(2), m.group(3)
        # The official network downsamples at the end of a layer, timm at the start of the next.
        stage = layer + 1 if part == "downsample" else layer
        key = f"stages.{stage}.{part}.{rest}"
    # Conv2d_BN's conv is called "c" officially, "conv" in timm.
    return re.sub(r"(^|\.)c\.(weight|bias)$", r"\1conv.\2", key)


def _accept_official_layout(
    state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Translate official-layout keys under ``prefix`` in place before loading."""
    own = [k for k in state_dict if k.startswith(prefix)]
    if not any(k[len(prefix):].startswith(("layers.", "patch_embed.seq.")) for k in own):
        return
    sub = {k[len(prefix):]: state_dict.pop(k) for k in own}
    for k, v in official_to_timm_keys(sub).items():
        state_dict[prefix + k] = v
