"""SAM's mask decoder, reorganised for CPUs (same weights, same math, float32 by default).

``segment_anything``'s decoder copies the 64x64x256 image embedding once per prompt and pushes
all 4096 image tokens through 128-wide projections in every attention layer, for every prompt.
Most of that work is either identical for every prompt of an image or can be reassociated so that
the handful of prompt tokens are projected instead of the 4096 image tokens:

* Layer 0 sees the unmodified image embedding (plus the constant "no mask" embedding), so its
  token-to-image keys/values and image-to-token queries are the same for every prompt. They are
  computed once per image (:class:`ImageContext`, cached on the embedding tensor).
* In later layers ``(X Wk^T + bk).q = X.(Wk^T q) + bk.q`` and, because softmax rows sum to one,
  ``softmax(.) (X Wv^T + bv) = (softmax(.) X) Wv^T + bv``: per prompt only ``heads x tokens``
  vectors of width 256 meet the 4096 image tokens. The image-to-token output projection (and
  its bias) is folded into the few value tokens the same way.
* The image tokens that reach the output upscaling are the embedding plus two low-rank updates
  (one per image-to-token attention: ``heads x tokens`` columns each), each followed by a
  LayerNorm. The first upscaling product of that is therefore a per-image product (computed
  once) plus the updates' projections, combined with each LayerNorm's per-token mean and
  scale (:meth:`FastMaskDecoder._up1_factored`): ~45% of that product's work per prompt.
* The transposed convolutions of the output upscaling (kernel 2, stride 2, no overlap) are plain
  matrix products (bias and the second GELU fused by oneDNN where available); the pixel shuffle
  is applied once to the final low-res masks instead of to the 64- and 32-channel maps.
* The token side (self-attention, MLP, IoU head, hypernetworks) handles ~7 tokens per prompt,
  so its cost is reading weights and launching ops: q/k/v share one product, the MLP runs
  through oneDNN with its activation fused, and the IoU head and the wanted hypernetwork MLPs
  run as one batched product per layer. Measured with the faster final pixel shuffle (two
  permutes instead of one with 2-element runs): ~1 ms of an ~18 ms decode.
* Prompts go through the transformer a few at a time (``chunk``, default 8: the token-side
  weights are read once per chunk while the chunk's 4 MB-per-prompt image tokens still fit in
  cache; measured 14-30% faster per prompt than one at a time), and the upscaling runs one
  prompt at a time and only for the prompts whose masks are wanted (``iou_threshold``), so
  segment-everything can filter by predicted IoU first.

Only the order of floating-point operations changes: results agree with the reference decoder to
float32 rounding (tests: logits within 1e-4 of their range, IoU predictions within 1e-5).
Mask inputs (dense prompts) are not handled here; callers use the reference decoder for them.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from .acceleration import fused_linear
from .decoder_tail import C1 as _TAIL_C1, C2 as _TAIL_C2, MAX_MASKS as _TAIL_MAX_MASKS, decoder_tail
from .tensor_versions import tensor_version, weights_fingerprint

__all__ = [
    "FastMaskDecoder", "ImageContext", "cached_dense_pe", "fast_decoder_for", "image_context", "supports_fast_decoder",
]


@dataclass
class ImageContext:
    """Per-image quantities shared by all prompts (no mask input)."""

    src: torch.Tensor  # (N, C) image tokens + no-mask embedding
    pe: torch.Tensor  # (N, C) dense positional encoding
    k0: torch.Tensor  # (heads, N, d) layer-0 token->image keys
    v0: torch.Tensor  # (heads, N, d) layer-0 token->image values
    q0: torch.Tensor  # (heads, N, d) layer-0 image->token queries
    grid: Tuple[int, int]
    # Positional-encoding parts of later projections (image independent): (heads, d, N) / (heads, N, d)
    kpe: Tuple[torch.Tensor, ...] = ()  # token->image layers >= 1 and the final attention
    qpe: Tuple[torch.Tensor, ...] = ()  # image->token layers >= 1
    up_src: Optional[torch.Tensor] = None  # (N, 4*c1) image part of the first upscaling product


def supports_fast_decoder(model: Sam) -> bool:
    """True for SAM-style two-way-transformer decoders (all registered models)."""
    md = getattr(model, "mask_decoder", None)
    tr = getattr(md, "transformer", None)
    layers = getattr(tr, "layers", None)
    if layers is None or len(layers) < 1 or not getattr(layers[0], "skip_first_layer_pe", False):
        return False
    up = getattr(md, "output_upscaling", None)
    if up is None or len(up) != 5 or not isinstance(up[0], torch.nn.ConvTranspose2d):
        return False
    if tuple(up[0].kernel_size) != (2, 2) or tuple(up[0].stride) != (2, 2):
        return False
    return all(not getattr(layer, "skip_first_layer_pe", False) for layer in list(layers)[1:])


class _AttnWeights:
    """Weights of one ``segment_anything`` Attention module, split per head."""

    def __init__(self, attn: torch.nn.Module, dtype: torch.dtype) -> None:
        self.heads = attn.num_heads
        self.inner = attn.internal_dim
        self.d = self.inner // self.heads
        self.scale = 1.0 / math.sqrt(self.d)
        c = attn.embedding_dim
        h, d = self.heads, self.d
        cast = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
        self.wq, self.bq = cast(attn.q_proj.weight), cast(attn.q_proj.bias)
        self.wk, self.bk = cast(attn.k_proj.weight), cast(attn.k_proj.bias)
        self.wv, self.bv = cast(attn.v_proj.weight), cast(attn.v_proj.bias)
        self.wo, self.bo = cast(attn.out_proj.weight), cast(attn.out_proj.bias)
        self.wq_h = self.wq.view(h, d, c)
        self.wk_h = self.wk.view(h, d, c)
        self.wv_h = self.wv.view(h, d, c)
        self.bq_h, self.bk_h, self.bv_h = self.bq.view(h, d), self.bk.view(h, d), self.bv.view(h, d)
        self.wo_h = self.wo.t().contiguous().view(h, d, c)  # out = sum_h o_h @ wo_h[h]


class _TokenSide:
    """Float32 weights of one layer's token-only modules: self-attention and MLP.

    The q/k (and, in the first layer, v) projections share their input, so they run as one
    product; the MLP's 2 MB weights go through oneDNN with the activation fused.
    """

    def __init__(self, layer: torch.nn.Module) -> None:
        sa, mlp = layer.self_attn, layer.mlp
        f = lambda t: t.detach().float().contiguous()  # noqa: E731
        self.heads, self.inner = sa.num_heads, sa.internal_dim
        self.scale = 1.0 / math.sqrt(self.inner // self.heads)
        self.wqkv = f(torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]))
        self.bqkv = f(torch.cat([sa.q_proj.bias, sa.k_proj.bias, sa.v_proj.bias]))
        self.wo, self.bo = f(sa.out_proj.weight), f(sa.out_proj.bias)
        self.w1, self.b1 = f(mlp.lin1.weight), f(mlp.lin1.bias)
        self.w2, self.b2 = f(mlp.lin2.weight), f(mlp.lin2.bias)
        self.act = mlp.act
        # fused_linear's keyword for an activation oneDNN applies itself (None: call self.act)
        if isinstance(self.act, torch.nn.ReLU):
            self.fused_act: Optional[Dict[str, bool]] = {"relu": True}
        elif isinstance(self.act, torch.nn.GELU) and self.act.approximate == "none":
            self.fused_act = {"gelu": True}
        else:
            self.fused_act = None

    def self_attn(self, qk_in: torch.Tensor, v_in: Optional[torch.Tensor]) -> torch.Tensor:
        """Self-attention of the tokens (P, T, C); ``v_in`` None: values from ``qk_in`` too."""
        n = self.inner
        if v_in is None:
            q, k, v = F.linear(qk_in, self.wqkv, self.bqkv).split(n, dim=-1)
        else:
            q, k = F.linear(qk_in, self.wqkv[:2 * n], self.bqkv[:2 * n]).split(n, dim=-1)
            v = F.linear(v_in, self.wqkv[2 * n:], self.bqkv[2 * n:])
        h = self.heads
        attn = torch.softmax(torch.matmul(_heads(q, h), _heads(k, h).transpose(-1, -2)).mul_(self.scale), dim=-1)
        return F.linear(_merge_heads(torch.matmul(attn, _heads(v, h))), self.wo, self.bo)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_act is not None:
            hidden = fused_linear(x, self.w1, self.b1, **self.fused_act)
        else:
            hidden = self.act(F.linear(x, self.w1, self.b1))
        return fused_linear(hidden, self.w2, self.b2)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(P, T, h*d) -> (P, h, T, d)."""
    p, t, hd = x.shape
    return x.view(p, t, h, hd // h).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(P, h, T, d) -> (P, T, h*d)."""
    p, h, t, d = x.shape
    return x.transpose(1, 2).reshape(p, t, h * d)


class FastMaskDecoder:
    """Mask decoding with per-image sharing and per-prompt cache blocking (module docstring).

    Get one with :func:`fast_decoder_for` (cached per model and rebuilt if weights change).
    ``dtype=torch.bfloat16`` runs the large products in bfloat16 (opt-in, approximate);
    softmax and norms stay float32. ``native``: float32 decoding ends in the compiled pass of
    :mod:`~mobile_sam_core.decoder_tail` where it is available.
    """

    def __init__(self, model: Sam, dtype: torch.dtype = torch.float32, chunk: int = 8, native: bool = True) -> None:
        if not supports_fast_decoder(model):
            raise ValueError("unsupported mask decoder layout")
        self.dtype = dtype
        self.chunk = max(1, int(chunk))
        md = model.mask_decoder
        tr = md.transformer
        self.md = md
        self.tr = tr
        self.layers = list(tr.layers)
        self.t2i = [_AttnWeights(layer.cross_attn_token_to_image, dtype) for layer in self.layers]
        self.i2t = [_AttnWeights(layer.cross_attn_image_to_token, dtype) for layer in self.layers]
        self.final = _AttnWeights(tr.final_attn_token_to_image, dtype)
        self.token_side = [_TokenSide(layer) for layer in self.layers]
        self.num_mask_tokens = md.num_mask_tokens
        self.output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0).detach()
        self.no_mask = model.prompt_encoder.no_mask_embed.weight.detach().reshape(-1)
        up = md.output_upscaling
        ct1, ln, ct2 = up[0], up[1], up[3]
        self.act1, self.act2 = up[2], up[4]
        exact_gelu = lambda a: isinstance(a, torch.nn.GELU) and a.approximate == "none"  # noqa: E731
        self.gelu1_exact, self.gelu2_fusable = exact_gelu(self.act1), exact_gelu(self.act2)
        c_in, c1 = ct1.weight.shape[0], ct1.weight.shape[1]
        c2 = ct2.weight.shape[1]
        self.c1, self.c2 = c1, c2
        cast = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
        # ConvTranspose2d weight (in, out, kh, kw) -> linear weight (kh*kw*out, in): output
        # features ordered (kh, kw, out) so that channels stay innermost.
        self.up1_w = cast(ct1.weight.permute(2, 3, 1, 0).reshape(4 * c1, c_in))
        self.up1_b = cast(ct1.bias.repeat(4))
        self.up_ln = (ln.weight.detach().to(dtype), ln.bias.detach().to(dtype), ln.eps)
        self.up2_w = cast(ct2.weight.permute(2, 3, 1, 0).reshape(4 * c2, c1))
        self.up2_b = cast(ct2.bias.repeat(4))
        self.tail = decoder_tail() if (native and dtype == torch.float32 and self.gelu1_exact and self.gelu2_fusable
                                       and (c1, c2) == (_TAIL_C1, _TAIL_C2)) else None
        self.norms = {}
        self._head_stacks: Dict[Tuple[int, ...], Optional[tuple]] = {}  # mask ids -> _head_stack
        # Factored first upscaling product (float32 only: it subtracts LayerNorm means after the
        # product, which bfloat16 would not resolve); needs exactly two image-to-token updates.
        self.factored = dtype == torch.float32 and len(self.layers) == 2
        if self.factored:
            w = ct1.weight.permute(2, 3, 1, 0).reshape(4 * c1, c_in).detach().double()
            n0, n1 = self.layers[0].norm4, self.layers[1].norm4
            g0, b0 = n0.weight.detach().double(), n0.bias.detach().double()
            g1, b1 = n1.weight.detach().double(), n1.bias.detach().double()
            f32 = lambda t: t.float().contiguous()  # noqa: E731
            self.f_v = f32(w * (g1 * g0))  # image tokens through both LayerNorm scales, then up1
            self.f_w1 = f32(w * g1)  # layer-1 update (and LN0's output) through LN1's scale
            # constant rows: -mean0 * rstd0 -> v, -mean1 -> z, 1 -> w (LN0's bias through LN1's scale)
            self.f_const = f32(torch.stack([w @ (g1 * g0), w @ g1, w @ (g1 * b0)]))
            self.f_bias = f32(w @ b1 + ct1.bias.detach().double().repeat(4))

    # ------------------------------------------------------------------ per-image context
    def prepare(self, features: torch.Tensor, dense_pe: torch.Tensor) -> ImageContext:
        """Shared quantities of one ``(1, C, h, w)`` image embedding."""
        _, c, h, w = features.shape
        x = features[0].reshape(c, h * w).t()
        src = (x + self.no_mask).to(self.dtype).contiguous()
        pe = dense_pe[0].reshape(c, h * w).t().to(self.dtype).contiguous()
        src_pe = src + pe
        a0, b0 = self.t2i[0], self.i2t[0]
        n = h * w
        k0 = F.linear(src_pe, a0.wk, a0.bk).view(n, a0.heads, a0.d).transpose(0, 1).contiguous()
        v0 = F.linear(src, a0.wv, a0.bv).view(n, a0.heads, a0.d).transpose(0, 1).contiguous()
        q0 = F.linear(src_pe, b0.wq, b0.bq).view(n, b0.heads, b0.d).transpose(0, 1).contiguous()
        kpe, qpe = self._pe_parts(dense_pe, pe)
        up_src = F.linear(src, self.f_v) if self.factored else None
        return ImageContext(src=src, pe=pe, k0=k0, v0=v0, q0=q0, grid=(h, w), kpe=kpe, qpe=qpe, up_src=up_src)

    def _pe_parts(self, dense_pe: torch.Tensor, pe: torch.Tensor) -> Tuple[tuple, tuple]:
        """Projections of the positional encoding used by layers >= 1 (image independent)."""
        key = (id(dense_pe), tuple(dense_pe.shape))
        hit = self.__dict__.get("_pe_cache")
        if hit is not None and hit[0] == key:
            return hit[1]
        n = pe.shape[0]
        kpe = tuple(
            F.linear(pe, a.wk).view(n, a.heads, a.d).permute(1, 2, 0).contiguous()  # h, d, N
            for a in self.t2i[1:] + [self.final]
        )
        qpe = tuple(F.linear(pe, a.wq).view(n, a.heads, a.d).transpose(0, 1).contiguous() for a in self.i2t[1:])
        self._pe_cache = (key, (kpe, qpe), dense_pe)  # keep dense_pe alive so its id stays unique
        return kpe, qpe

    # ------------------------------------------------------------------ attention blocks
    def _t2i_shared(self, a: _AttnWeights, q_in: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
        """Tokens (P, T, C) attend to the shared layer-0 image keys/values."""
        p, t, _ = q_in.shape
        q = F.linear(q_in, a.wq, a.bq).view(p * t, a.heads, a.d).transpose(0, 1)  # h, P*T, d
        attn = torch.bmm(q, ctx.k0.transpose(1, 2)) * a.scale  # h, P*T, N
        attn = torch.softmax(attn.float(), dim=-1).to(self.dtype)
        out = torch.bmm(attn, ctx.v0)  # h, P*T, d
        out = out.transpose(0, 1).reshape(p, t, a.inner)
        return F.linear(out, a.wo, a.bo)

    def _t2i(self, a: _AttnWeights, q_in: torch.Tensor, keys: torch.Tensor, kpe: torch.Tensor) -> torch.Tensor:
        """Tokens (P, T, C) attend to per-prompt image tokens ``keys`` (P, N, C).

        ``(Wk (keys + pe) + bk) . q = (Wk^T q) . keys + q . (Wk pe) + q . bk``; ``kpe = Wk pe``
        per head (h, d, N) is image independent.
        """
        p, t, c = q_in.shape
        h, d = a.heads, a.d
        q = _heads(F.linear(q_in, a.wq, a.bq), h)  # P,h,T,d
        qk = torch.matmul(q, a.wk_h)  # P,h,T,C   (q_h Wk_h)
        base = torch.matmul(q, kpe) + torch.matmul(q, a.bk_h.view(h, d, 1))  # P,h,T,N
        scores = torch.baddbmm(base.reshape(p, h * t, -1), qk.reshape(p, h * t, c), keys.transpose(1, 2))
        attn = torch.softmax((scores * a.scale).float(), dim=-1).to(self.dtype)  # P, hT, N
        ctxv = torch.bmm(attn, keys).view(p, h, t, c)  # P,h,T,C
        out = torch.matmul(ctxv, a.wv_h.transpose(1, 2)) + a.bv_h.view(h, 1, d)  # P,h,T,d
        return F.linear(_merge_heads(out), a.wo, a.bo)

    def _i2t(self, a: _AttnWeights, residual: torch.Tensor, shared: bool, qpe: Optional[torch.Tensor],
             tokens: torch.Tensor, tokens_pe: torch.Tensor,
             ctx: ImageContext) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image tokens attend to the prompt tokens: ``(residual + update (P, N, C), attn, m)``.

        The update is ``attn^T @ m``: attention weights ``attn`` (P, hT, N), values ``m`` (P, hT, C).

        With ``shared`` the layer-0 queries of ``ctx`` are used and ``residual`` is left alone;
        otherwise the queries are ``Wq (residual + pe) + bq`` (``qpe = Wq pe`` per head, (h, N, d))
        and ``residual`` is updated in place.
        """
        p, t, c = tokens.shape
        h, d = a.heads, a.d
        k_tok = _heads(F.linear(tokens_pe, a.wk, a.bk), h)  # P,h,T,d
        v_tok = _heads(F.linear(tokens, a.wv, a.bv), h)  # P,h,T,d
        if shared:
            kt = k_tok.permute(1, 0, 2, 3).reshape(h, p * t, d)
            scores = torch.bmm(kt, ctx.q0.transpose(1, 2))  # h, P*T, N
            n = scores.shape[-1]
            scores = scores.view(h, p, t, n).transpose(0, 1)  # P,h,T,N
        else:
            # (Wq (keys + pe) + bq) . k = keys . (Wq^T k) + (Wq pe) . k + bq . k
            kq = torch.matmul(k_tok, a.wq_h)  # P,h,T,C
            base = torch.matmul(k_tok, qpe.transpose(1, 2)) + torch.matmul(k_tok, a.bq_h.view(h, d, 1))  # P,h,T,N
            n = base.shape[-1]
            scores = torch.baddbmm(base.reshape(p, h * t, n), kq.reshape(p, h * t, c), residual.transpose(1, 2))
            scores = scores.view(p, h, t, n)
        # softmax over each head's T prompt tokens (dim 2 keeps the image tokens contiguous)
        attn = torch.softmax((scores * a.scale).float(), dim=2).to(self.dtype).reshape(p, h * t, n)
        # Fold out_proj (and its bias: each head's weights sum to one) into the value tokens.
        m = (torch.matmul(v_tok, a.wo_h) + a.bo / h).reshape(p, h * t, c)  # P, hT, C
        if shared:
            return torch.baddbmm(residual.expand(p, n, c), attn.transpose(1, 2), m), attn, m
        return residual.baddbmm_(attn.transpose(1, 2), m), attn, m

    def _ln(self, x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
        if self.dtype == torch.float32:
            return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        key = id(norm)
        wb = self.norms.get(key)
        if wb is None:
            wb = self.norms[key] = (norm.weight.detach().to(self.dtype), norm.bias.detach().to(self.dtype))
        return F.layer_norm(x, norm.normalized_shape, wb[0], wb[1], norm.eps)

    def _small(self, fn: Any, *args: Optional[torch.Tensor]) -> torch.Tensor:
        """Token-sized work (self-attention, MLP) runs in float32 with the original weights."""
        if self.dtype == torch.float32:
            return fn(*args)
        return fn(*(None if a is None else a.float() for a in args)).to(self.dtype)

    # ------------------------------------------------------------------ transformer
    def transformer(self, ctx: ImageContext, sparse: torch.Tensor,
                    keep: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Optional[list]]:
        """Two-way transformer for prompts ``sparse`` (P, S, C) -> ``(hs (P, T, C), keys (P, N, C), factors)``.

        ``factors`` (when :attr:`factored`): per image-to-token layer ``(attn, m, mean, rstd)``,
        its update and its LayerNorm's statistics, for :meth:`masks`.

        ``keep`` (token indices): the final attention runs only for these tokens and ``hs`` holds
        only them (each token attends independently there; the prompt tokens' outputs are unused).
        """
        p = sparse.shape[0]
        out_tok = self.output_tokens.to(sparse.dtype).unsqueeze(0).expand(p, -1, -1)
        tokens = torch.cat((out_tok, sparse), dim=1).to(self.dtype)
        qpe = tokens
        queries = tokens
        keys: Optional[torch.Tensor] = None
        factors: Optional[list] = [] if self.factored else None
        for i, layer in enumerate(self.layers):
            ts = self.token_side[i]
            if i == 0:
                queries = self._small(ts.self_attn, queries, None)
            else:
                queries = queries + self._small(ts.self_attn, queries + qpe, queries)
            queries = self._ln(queries, layer.norm1)
            if i == 0:
                attn_out = self._t2i_shared(self.t2i[0], queries + qpe, ctx)
            else:
                attn_out = self._t2i(self.t2i[i], queries + qpe, keys, ctx.kpe[i - 1])
            queries = self._ln(queries + attn_out, layer.norm2)
            queries = self._ln(queries + self._small(ts.mlp, queries), layer.norm3)
            if i == 0:
                keys, attn, m = self._i2t(self.i2t[0], ctx.src.unsqueeze(0), True, None, queries, queries + qpe, ctx)
            else:
                keys, attn, m = self._i2t(self.i2t[i], keys, False, ctx.qpe[i - 1], queries, queries + qpe, ctx)
            if factors is None:
                keys = self._ln(keys, layer.norm4)
            else:  # same op as F.layer_norm, also returning the per-token mean and 1/std
                norm = layer.norm4
                keys, mean, rstd = torch.native_layer_norm(keys, norm.normalized_shape, norm.weight, norm.bias,
                                                           norm.eps)
                factors.append((attn, m, mean, rstd))
        if keep is not None:
            queries, qpe = queries[:, keep], qpe[:, keep]
        attn_out = self._t2i(self.final, queries + qpe, keys, ctx.kpe[-1])
        queries = self._ln(queries + attn_out, self.tr.norm_final_attn)
        return queries.float(), keys, factors

    def iou_and_hyper(self, hs: torch.Tensor, mask_ids: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """IoU predictions (P, M) and hypernetwork outputs (P, M, c2) of mask tokens ``mask_ids``.

        ``hs`` holds the IoU token and then those mask tokens (``transformer(..., keep=...)``).
        """
        md = self.md
        ids = tuple(mask_ids)
        stack = self._head_stack(ids)
        if stack is None:
            iou = md.iou_prediction_head(hs[:, 0, :])[:, list(ids)]
            hyper = torch.stack([md.output_hypernetworks_mlps[j](hs[:, 1 + i, :]) for i, j in enumerate(ids)], dim=1)
            return iou, hyper
        # The IoU head and the wanted hypernetworks as one batched product per layer.
        hidden, (w_iou, b_iou), (w_hyp, b_hyp) = stack
        x = hs[:, :1 + len(ids)].transpose(0, 1)  # (1 + M, P, C)
        for w, b in hidden:
            x = torch.baddbmm(b, x, w).relu_()
        iou = torch.addmm(b_iou, x[0], w_iou)[:, list(ids)]
        hyper = torch.baddbmm(b_hyp, x[1:], w_hyp).transpose(0, 1)
        return iou, hyper

    def _head_stack(self, ids: Tuple[int, ...]) -> Optional[tuple]:
        """Stacked (transposed) weights of the IoU head and hypernetworks ``ids``, or None when
        their layouts differ from SAM's (same depth, equal hidden layers, no sigmoid)."""
        if ids in self._head_stacks:
            return self._head_stacks[ids]
        md = self.md
        heads = [md.iou_prediction_head] + [md.output_hypernetworks_mlps[j] for j in ids]
        layers = [list(h.layers) for h in heads]
        depth = len(layers[0])
        ok = all(len(ls) == depth and not h.sigmoid_output for h, ls in zip(heads, layers))
        ok = ok and all(len({tuple(ls[i].weight.shape) for ls in layers}) == 1 for i in range(depth - 1))
        stack = None
        if ok:
            t = lambda ws: torch.stack([w.detach().float().t() for w in ws]).contiguous()  # noqa: E731
            b = lambda bs: torch.stack([v.detach().float() for v in bs]).unsqueeze(1).contiguous()  # noqa: E731
            hidden = [(t([ls[i].weight for ls in layers]), b([ls[i].bias for ls in layers])) for i in range(depth - 1)]
            last = [ls[-1] for ls in layers]
            iou = (last[0].weight.detach().float().t().contiguous(), last[0].bias.detach().float())
            hyp = (t([m.weight for m in last[1:]]), b([m.bias for m in last[1:]]))
            stack = (hidden, iou, hyp)
        self._head_stacks[ids] = stack
        return stack

    def _up1_factored(self, up_src: torch.Tensor, factors: list) -> torch.Tensor:
        """First upscaling product ``keys @ up1_w^T + up1_b`` (N, 4*c1) of one prompt, from its factors.

        With ``x0 = src + A0 m0`` (LayerNorm 0 -> mean0, rstd0 -> ``k1``) and ``x1 = k1 + A1 m1``
        (LayerNorm 1 -> mean1, rstd1 -> ``keys``), per token:
        ``y = rstd1 (rstd0 (V src + (A0 m0) V^T - mean0 V1) + W G1 b0 + (A1 m1) (W G1)^T - mean1 W g1) + b``
        with ``W`` = up1_w, ``G`` = LayerNorm scales, ``V = W G1 G0``. ``V src`` is ``ctx.up_src``.
        """
        (a0, m0, mean0, rstd0), (a1, m1, mean1, rstd1) = factors  # a: (1, K, N), m: (1, K, C), stats (1, N, 1)
        n = rstd0.shape[1]
        r1 = rstd1[0].view(1, n)
        r01 = rstd0[0].view(1, n) * r1
        # rstd1 is folded into the coefficients and the bias rides along as a last row, so the
        # 4096 x 256 result is written once by the product (plus one scaled copy of up_src).
        coeff = torch.cat([a0[0] * r01, a1[0] * r1, -mean0[0].view(1, n) * r01, -mean1[0].view(1, n) * r1, r1,
                           r1.new_ones(1, n)])  # (K0 + K1 + 4, N)
        rows = torch.cat([m0[0] @ self.f_v.t(), m1[0] @ self.f_w1.t(), self.f_const,
                          self.f_bias.view(1, -1)])  # (K0 + K1 + 4, 4*c1)
        return (up_src * r01.view(n, 1)).addmm_(coeff.t(), rows)

    def masks(self, keys: torch.Tensor, hyper: torch.Tensor, grid: Tuple[int, int],
              up_src: Optional[torch.Tensor] = None, factors: Optional[list] = None) -> torch.Tensor:
        """Low-res logits (P, M, 4h, 4w) for image tokens ``keys`` (P, N, C), ``hyper`` (P, M, c2).

        With ``up_src`` and one prompt's ``factors`` (see :meth:`transformer`) the first product
        is computed from them instead of from ``keys``.
        """
        p, n, c = keys.shape
        h, w = grid
        c1, c2 = self.c1, self.c2
        if factors is not None and up_src is not None and p == 1:
            y = self._up1_factored(up_src, factors)
        else:
            y = fused_linear(keys.reshape(p * n, c), self.up1_w, self.up1_b)  # (P*N, 4*c1)
        y = y.view(p * n * 4, c1)
        if self.tail is not None and p == 1 and hyper.shape[1] <= _TAIL_MAX_MASKS:
            ln_w, ln_b, eps = self.up_ln
            return self.tail(y, w, ln_w, ln_b, eps, self.up2_w, self.up2_b, hyper[0].float().contiguous())[None]
        y = F.layer_norm(y, (c1,), self.up_ln[0], self.up_ln[1], self.up_ln[2])
        y = torch.ops.aten.gelu_(y) if self.gelu1_exact else self.act1(y)
        if self.gelu2_fusable:
            z = fused_linear(y, self.up2_w, self.up2_b, gelu=True)
        else:
            z = self.act2(fused_linear(y, self.up2_w, self.up2_b))
        z = z.view(p, n * 16, c2)
        m = torch.bmm(z, hyper.to(z.dtype).transpose(1, 2)).float()  # P, N*16, M
        mm = hyper.shape[1]
        # rows are (y, x, kh, kw, kh2, kw2): output pixel (4y + 2kh + kh2, 4x + 2kw + kw2). Two
        # permutes, the first moving (kh2, kw2, mask) runs of 4*M values, are ~5x faster than
        # one with 2-element innermost runs.
        m = m.view(p, h, w, 2, 2, 4 * mm).permute(0, 1, 3, 2, 4, 5).contiguous()  # (y, kh), (x, kw), ...
        m = m.view(p, 2 * h, 2 * w, 2, 2, mm).permute(0, 5, 1, 3, 2, 4)
        return m.reshape(p, mm, 4 * h, 4 * w)

    # ------------------------------------------------------------------ public entry points
    @torch.no_grad()
    def decode(
        self, ctx: ImageContext, sparse: torch.Tensor, multimask_output: bool, iou_threshold: Optional[float] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode prompts ``sparse`` (P, S, C).

        Returns ``(iou (P, M), masks (K, 4h, 4w), index (K, 2))`` where ``index`` lists the
        ``(prompt, mask)`` pairs whose low-res logits are in ``masks``: all pairs when
        ``iou_threshold`` is None, otherwise those with ``iou > iou_threshold`` (the upscaling
        runs only for prompts with at least one such mask).
        """
        mask_ids = list(range(1, self.num_mask_tokens)) if multimask_output else [0]
        keep = torch.tensor([0] + [1 + j for j in mask_ids])  # the IoU token and the wanted mask tokens
        ious, masks, index = [], [], []
        for s in range(0, sparse.shape[0], self.chunk):
            hs, keys, factors = self.transformer(ctx, sparse[s: s + self.chunk], keep)
            iou, hyper = self.iou_and_hyper(hs, mask_ids)
            ious.append(iou)
            if iou_threshold is None:
                sel = torch.ones_like(iou, dtype=torch.bool)
            else:
                sel = iou > iou_threshold
            rows = torch.nonzero(sel.any(dim=1)).flatten()
            if rows.numel() == 0:
                continue
            # one prompt at a time: its logits do not depend on which other prompts were selected
            for r in rows.tolist():
                fac = None if factors is None else [tuple(t[r: r + 1] for t in f) for f in factors]
                low = self.masks(keys[r: r + 1], hyper[r: r + 1], ctx.grid, ctx.up_src, fac)[0]  # M, H, W
                wanted = torch.nonzero(sel[r]).flatten()
                masks.append(low[wanted])
                index.append(torch.stack([torch.full_like(wanted, r + s), wanted], dim=1))
        iou_all = torch.cat(ious) if ious else torch.zeros(0, 0)
        if masks:
            return iou_all, torch.cat(masks), torch.cat(index)
        hw = (4 * ctx.grid[0], 4 * ctx.grid[1])
        return iou_all, torch.zeros((0, *hw)), torch.zeros((0, 2), dtype=torch.long)

    @torch.no_grad()
    def __call__(self, ctx: ImageContext, sparse: torch.Tensor, multimask_output: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Same outputs as ``MaskDecoder.forward`` without mask input: ``(masks, iou_pred)``."""
        iou, masks, _ = self.decode(ctx, sparse, multimask_output)
        return masks.view(iou.shape[0], iou.shape[1], *masks.shape[-2:]), iou


# ---------------------------------------------------------------------------------- caching

_lock = threading.Lock()


def fast_decoder_for(model: Sam, dtype: torch.dtype = torch.float32) -> Optional[FastMaskDecoder]:
    """The :class:`FastMaskDecoder` of ``model`` (rebuilt when its weights change), or None."""
    if not supports_fast_decoder(model):
        return None
    fp = weights_fingerprint(model.mask_decoder) + weights_fingerprint(model.prompt_encoder)
    with _lock:
        store = model.__dict__.setdefault("_msc_fast_decoders", {})
        entry = store.get(dtype)
        if entry is None or entry[0] != fp:
            entry = (fp, FastMaskDecoder(model, dtype))
            store[dtype] = entry
        return entry[1]


_ctx_lock = threading.Lock()
_ctx_cache: "OrderedDict[tuple, tuple]" = OrderedDict()
_CTX_ENTRIES = 4  # per-image contexts are ~3x the embedding's size; keep only recent images


def image_context(decoder: FastMaskDecoder, features: torch.Tensor, dense_pe: torch.Tensor) -> ImageContext:
    """:meth:`FastMaskDecoder.prepare`, cached for the few most recently used embeddings."""
    key = (id(features), tensor_version(features), id(decoder))
    with _ctx_lock:
        hit = _ctx_cache.get(key)
        if hit is not None and hit[0]() is features:
            _ctx_cache.move_to_end(key)
            return hit[1]
    ctx = decoder.prepare(features, dense_pe)
    with _ctx_lock:
        _ctx_cache[key] = (weakref.ref(features), ctx)
        _ctx_cache.move_to_end(key)
        while len(_ctx_cache) > _CTX_ENTRIES:
            _ctx_cache.popitem(last=False)
    return ctx


def cached_dense_pe(model: Sam) -> torch.Tensor:
    """``prompt_encoder.get_dense_pe()`` (image independent), cached until its weights change."""
    pe = model.prompt_encoder
    gauss = pe.pe_layer.positional_encoding_gaussian_matrix
    key = (id(gauss), tensor_version(gauss), tuple(pe.image_embedding_size))
    hit = pe.__dict__.get("_msc_dense_pe")
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        value = pe.get_dense_pe()
    pe.__dict__["_msc_dense_pe"] = (key, value)
    return value
