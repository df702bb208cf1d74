"""The TinyViT encoder run by OpenVINO (the default engine of the opt-in bf16 fast mode).

OpenVINO's CPU plugin fuses each window attention (scores, bias, softmax, values) into one
kernel and keeps bfloat16 activations in its own blocked layouts, which PyTorch eager cannot do;
on a 2-core AVX-512-BF16 machine this encodes a 1024-pixel image 5-9% faster than
:class:`~mobile_sam_core.acceleration.FastTinyViT` in bfloat16, at the same accuracy
(embedding error ~7e-3 relative against float32 either way; docs/benchmarks.md).

The network is handed to OpenVINO as :class:`OpenVinoGraph`, a plain-PyTorch restatement of
the encoder written for that compiler rather than the module's own forward (measured in one
run: 341 ms against 383 ms for the module's own graph, 365 ms for FastTinyViT in bf16):

* the attention stages stay in NCHW, so the depthwise "local" convolution needs no layout
  changes and the MLP runs as 1x1 convolutions with a channel LayerNorm; only the window
  partition and its inverse move data;
* q, k and v are three projections instead of one split into heads, which OpenVINO executes
  with a slow reference ``Gather``/``Split``;
* only real tokens are normalised, projected and attended: the windows are cut in up to four
  blocks of equal shape (whole windows, partial last column, partial last row, corner), and the
  padding of a partial window enters as one merged key (see
  :func:`~mobile_sam_core.acceleration._window_bias`); measured 325-340 ms against 354-355 ms
  for padding every window (bf16), 515-521 ms against 553-556 ms (fp32).

The converted model is saved under the weights cache (``openvino/``), keyed by a hash of the
weights and :data:`GRAPH_VERSION`, so conversion (about 10-15 s of TorchScript tracing) happens
once per model and again only when this graph changes (files from older graphs are then deleted).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Dict

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = ["OpenVinoEncoder", "OpenVinoGraph", "openvino_available"]

# Part of the cache file name: bump it whenever OpenVinoGraph computes differently, so that a
# model converted from an older graph is not reused.
GRAPH_VERSION = 2

# What OpenVINO calls the two precisions of ENCODER_PRECISIONS.
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def openvino_available() -> bool:
    """True when the ``openvino`` package imports."""
    try:
        import openvino  # noqa: F401
    except Exception:
        return False
    return True


def _conv(x: torch.Tensor, p: Dict[str, Any], gelu: bool = False) -> torch.Tensor:
    y = F.conv2d(x, p["w"], p["b"], p["stride"], p["pad"], 1, p["groups"])
    return F.gelu(y) if gelu else y


def _channel_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW tensor."""
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]


class OpenVinoGraph(torch.nn.Module):
    """The encoder as plain PyTorch ops laid out for OpenVINO (see module docstring).

    Built from a float32 :class:`~mobile_sam_core.acceleration.FastTinyViT` snapshot (BatchNorm
    already folded into the convolutions); computes the same function as the encoder module.
    """

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        from .acceleration import FastTinyViT

        self.snap = FastTinyViT(encoder, torch.float32)

    def _block(self, x: torch.Tensor, p: Dict[str, Any]) -> torch.Tensor:
        from .acceleration import _window_bias, _window_blocks

        b, c, h, w = x.shape
        ws, heads, kd, vd = p["ws"], p["heads"], p["kd"], p["vd"]
        wqkv, bqkv = p["wqkv"], p["bqkv"]  # rows: [q of all heads | k of all heads | v of all heads]
        hk = heads * kd
        pad_k = p["pad_qkv"][hk:2 * hk].view(1, heads, 1, kd)  # key and value of a zero token
        pad_v = p["pad_qkv"][2 * hk:].view(1, heads, 1, vd)
        bands: Dict[int, list] = {}  # attention output of each block, by its first row
        for (_, rows, cols), (nr, lr, nc, lc) in _window_blocks(h, w, ws):
            n, bw = lr * lc, b * nr * nc
            t = x[:, :, rows, cols].reshape(b, c, nr, lr, nc, lc).permute(0, 2, 4, 3, 5, 1).reshape(bw, n, c)
            t = F.layer_norm(t, (c,), p["ln"][0], p["ln"][1], p["ln"][2])
            q = F.linear(t, wqkv[:hk], bqkv[:hk]).view(bw, n, heads, kd).transpose(1, 2)
            k = F.linear(t, wqkv[hk:2 * hk], bqkv[hk:2 * hk]).view(bw, n, heads, kd).transpose(1, 2)
            v = F.linear(t, wqkv[2 * hk:], bqkv[2 * hk:]).view(bw, n, heads, vd).transpose(1, 2)
            # computed inside the trace, not taken from FastTinyViT's per-shape cache: a cached
            # constant on the tracer's check run would make the two traced graphs differ
            bias = _window_bias(p["bias"], ws, lr, lc)
            if bias.shape[-1] > n:  # partial windows: their padding as one merged key
                k = torch.cat([k, pad_k.expand(bw, heads, 1, kd)], 2)
                v = torch.cat([v, pad_v.expand(bw, heads, 1, vd)], 2)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=p["scale"])
            o = F.linear(o.transpose(1, 2).reshape(bw, n, heads * vd), p["wproj"], p["bproj"])
            bands.setdefault(rows.start, []).append(
                o.view(b, nr, nc, lr, lc, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, nr * lr, nc * lc))
        o = torch.cat([torch.cat(band, 3) for _, band in sorted(bands.items())], 2)
        x = _conv(x + o, p["local"])
        hdn = _channel_norm(x, p["mln"][0], p["mln"][1], p["mln"][2])
        hdn = F.gelu(F.conv2d(hdn, p["w1"][:, :, None, None], p["b1"]))
        return x + F.conv2d(hdn, p["w2"][:, :, None, None], p["b2"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.snap
        x = _conv(_conv(x, s.stem[0], gelu=True), s.stem[1])
        for c1, c2, c3 in s.stage0:
            x = F.gelu(_conv(_conv(_conv(x, c1, gelu=True), c2, gelu=True), c3) + x)
        for down, blocks in s.stages:
            x = _conv(_conv(_conv(x, down[0], gelu=True), down[1], gelu=True), down[2])
            for p in blocks:
                x = self._block(x, p)
        nk = s.neck
        y = F.conv2d(x, nk["w1"][:, :, None, None])
        y = _channel_norm(y, *nk["ln1"])
        y = F.conv2d(y, nk["w2"], padding=1)
        return _channel_norm(y, *nk["ln2"])


def _remove_older_graphs(path: Path, name: str) -> None:
    """Delete the conversions of the same encoder (same size and weights) by earlier graph
    versions, given ``path`` of the current one; unused from now on."""
    rest = path.name[len(f"{name}-g{GRAPH_VERSION}-"):]  # "<size>-<hash>.xml"
    prefixes = [f"{name}-"] + [f"{name}-g{v}-" for v in range(2, GRAPH_VERSION)]  # version 1 had no suffix
    for prefix in prefixes:
        xml = path.with_name(prefix + rest)
        for f in (xml, xml.with_suffix(".bin")):
            try:
                f.unlink(missing_ok=True)
            except OSError as exc:  # read-only cache: leave it
                log.debug("could not remove %s: %s", f, exc)


def _convert(encoder: torch.nn.Module) -> Any:
    import openvino as ov

    size = int(encoder.img_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about Python control flow
        return ov.convert_model(OpenVinoGraph(encoder).eval(), example_input=torch.zeros(1, 3, size, size))


class OpenVinoEncoder:
    """The encoder compiled by OpenVINO for ``precision`` (``"bf16"`` or ``"fp32"``).

    The converted model is cached on disk (``<cache>/openvino/<name>-g<version>-<size>-<hash>.xml``);
    an unreadable cache entry is converted again. Calls are serialised (one inference request).
    """

    def __init__(self, encoder: torch.nn.Module, name: str = "encoder", precision: str = "bf16") -> None:
        import openvino as ov

        from .acceleration import converted_encoder_path

        if precision not in _HINTS:
            raise ValueError(f"OpenVINO encoder precision must be one of {tuple(_HINTS)}, got {precision!r}")
        core = ov.Core()
        path = converted_encoder_path(encoder, f"{name}-g{GRAPH_VERSION}", "openvino", ".xml")
        model = None
        if path.exists():
            try:
                model = core.read_model(str(path))
            except Exception as exc:  # truncated or foreign file: convert again
                log.warning("OpenVINO cache %s unreadable (%s); converting the encoder again", path, exc)
        if model is None:
            log.info("converting the %s encoder for OpenVINO (once per weights, about 15 s; cached as %s)", name, path)
            model = _convert(encoder)
            self._save(ov, model, path)
            _remove_older_graphs(path, name)
        self.path = path
        self.precision = precision
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "INFERENCE_NUM_THREADS": str(torch.get_num_threads()),
            "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY",
            # Pinned threads cannot move off a core that another process (or PyTorch's own
            # pool) is still busy on: measured 350 ms pinned vs 316 ms unpinned per encode
            # when interleaved with a second process.
            "ENABLE_CPU_PINNING": "NO",
        })
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    @staticmethod
    def _save(ov: Any, model: Any, path: Path) -> None:
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}-{threading.get_ident()}.xml")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            # The .bin first: a reader that finds the .xml also finds its weights.
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)
        except OSError as exc:  # read-only cache: keep the converted model in memory only
            log.warning("could not cache the OpenVINO encoder in %s: %s", path.parent, exc)
            for leftover in (tmp, tmp.with_suffix(".bin")):
                leftover.unlink(missing_ok=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` preprocessed images -> ``(B, 256, 64, 64)`` float32 embeddings."""
        data = x.detach().float().contiguous().numpy()
        outs = []
        with self._lock:  # the model is compiled for one image at a time
            for i in range(data.shape[0]):
                outs.append(torch.from_numpy(self._request.infer({0: data[i:i + 1]})[0].copy()))
        return torch.cat(outs) if len(outs) > 1 else outs[0]
