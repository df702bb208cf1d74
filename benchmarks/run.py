"""Ours vs the official MobileSAM implementation, interleaved, on this machine.

    python -m benchmarks.run            # full run (about 15-20 min on 2 cores)
    python -m benchmarks.run --quick    # fewer repeats, smaller scaling sweep (roughly half of that)

Installs the official implementation (PyPI ``mobilesam-mirror``) into the current environment
when it is missing, builds one perturbed random MobileSAM checkpoint in the official key layout
(both sides load the same file), starts one worker process per side and sends them the same
tasks in turn (warm-up first, then repeats; medians reported). Writes ``docs/benchmarks.md`` and
``docs/benchmark_scaling.png`` (``--out`` to change the folder) and prints the table.

Sides: ``ours`` (mobile_sam_core defaults), ``official`` (mobile_sam as shipped) and
``official_tuned`` (mobile_sam with the process-wide runtime settings that mobile_sam_core applies:
glibc allocator tuning and libgomp's shorter spin-wait, to show how much of the gain they alone explain).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.metrics import recall_at_iou  # noqa: E402
from benchmarks.workers import Worker, photo  # noqa: E402

CLICK_HW = (1500, 2241)
ENCODER_HW = (1024, 1024)
EVERYTHING_HW = (685, 1024)


# ------------------------------------------------------------------------------------- setup

def ensure_official() -> str:
    """Import ``mobile_sam`` or pip-install ``mobilesam-mirror`` into this environment."""
    try:
        import mobile_sam  # noqa: F401
    except ImportError:
        print("installing the official implementation: pip install mobilesam-mirror", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "mobilesam-mirror"])
        importlib.invalidate_caches()
    from importlib.metadata import version

    return version("mobilesam-mirror")


def _make_checkpoint(path: str) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import sam_model_registry

    torch.manual_seed(0)
    model = sam_model_registry["vit_t"]()
    g = torch.Generator().manual_seed(1)
    state = {}
    for key, value in model.state_dict().items():
        value = value.clone()
        if value.dtype.is_floating_point:
            if key.endswith("running_var"):
                value = torch.rand(value.shape, generator=g) + 0.5
            elif key.endswith(("running_mean", "attention_biases")) or key.endswith("bias"):
                value = torch.randn(value.shape, generator=g) * 0.1
            elif value.ndim == 1:
                value = 1.0 + 0.2 * torch.randn(value.shape, generator=g)
            else:
                value = value + 0.01 * torch.randn(value.shape, generator=g)
        state[key] = value
    torch.save(state, path)


def make_checkpoint(folder: Path) -> str:
    """Perturbed random MobileSAM weights in the official layout (made in a separate process:
    importing ``mobile_sam`` re-registers timm model names)."""
    import multiprocessing as mp

    path = str(folder / "mobile_sam_random_perturbed.pt")
    p = mp.get_context("spawn").Process(target=_make_checkpoint, args=(path,))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError("could not build the random checkpoint")
    return path


def machine() -> Dict[str, Any]:
    import torch

    info: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["cpu"] = names[0] if names else platform.processor()
        info["logical_cpus"] = len(names)
        info["isa"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
                               if f in flags)
    except OSError:
        info["cpu"] = platform.processor()
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    for mod in ("onnxruntime", "openvino", "cv2", "numpy", "timm"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except Exception:
            pass
    from mobile_sam_core.native import compiler, compiler_version

    cxx = compiler()  # the compiler that builds the C++ kernels (first line of --version)
    version = compiler_version(cxx).splitlines() if cxx else []
    info["cxx"] = version[0] if version else "none (kernels not compiled)"
    if "openvino" in info:
        info["openvino"] = str(info["openvino"]).split("-")[0]  # "2026.4.1-22982-<hash>-releases/..."
    return info


# ------------------------------------------------------------------------------------- running

class Bench:
    def __init__(self, workers: Dict[str, Worker], log: List[str]) -> None:
        self.w = workers
        self.log = log

    def interleaved(self, task: str, sides: List[str], repeats: int, warmup: int = 1,
                    per_side: Optional[Dict[str, Dict[str, Any]]] = None, **kwargs: Any) -> Dict[str, List[Dict]]:
        """Run ``task`` on every side in turn; ``warmup`` untimed rounds first."""
        per_side = per_side or {}
        res: Dict[str, List[Dict]] = {s: [] for s in sides}
        for r in range(warmup + repeats):
            for s in sides:
                out = self.w[s].call(task, **{**kwargs, **per_side.get(s, {})})
                if r >= warmup:
                    res[s].append(out)
        line = f"{task} {kwargs} " + " ".join(
            f"{s}={statistics.median(o['s'] for o in v):.3f}s" for s, v in res.items())
        print("  " + line, flush=True)
        self.log.append(line)
        return res


def med(rows: List[Dict]) -> float:
    return statistics.median(r["s"] for r in rows)


def faults_note(res: Dict[str, List[Dict]]) -> str:
    """Median minor page faults per timed call of each side (fresh memory touched by the call)."""
    parts = [f"{side} {statistics.median(o['faults'] for o in v):,.0f}" for side, v in res.items()
             if v and "faults" in v[0]]
    return "minor page faults per call (median): " + ", ".join(parts) if parts else ""


def unpack(result: Dict[str, Any]) -> List[np.ndarray]:
    h, w = result["mask_shape"]
    return [np.unpackbits(m)[: h * w].reshape(h, w).astype(bool) for m in result["masks"]]


def fmt_t(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


# ------------------------------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a smaller scaling sweep")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.md and the plot")
    ap.add_argument("--no-app", action="store_true", help="skip the app (cold start, round trip, memory)")
    ap.add_argument("--no-tuned", action="store_true", help="skip the official_tuned side")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default: torch's)")
    args = ap.parse_args(argv)
    q = args.quick
    t_start = time.time()
    load_before = os.getloadavg()
    try:  # fail now, not after 20 minutes of measuring
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is missing (the scaling plot needs it): pip install -r requirements-dev.txt", file=sys.stderr)
        return 2
    official_version = ensure_official()
    tmp = Path(tempfile.mkdtemp(prefix="msc-bench-"))
    ckpt = make_checkpoint(tmp)
    sides = ["ours", "official"] + ([] if args.no_tuned else ["official_tuned"])
    print(f"starting workers {sides} ...", flush=True)
    workers = {s: Worker(s, ckpt, args.threads) for s in sides}
    log: List[str] = []
    b = Bench(workers, log)
    rows: List[Dict[str, Any]] = []
    try:
        R = dict(enc=3 if q else 7, click=7 if q else 21, ev=1 if q else 3, ev32=1 if q else 2, app=8 if q else 20)

        # 1. encoder (exact path)
        print("encoder ...", flush=True)
        r = b.interleaved("encoder", sides, R["enc"], name="astronaut", hw=ENCODER_HW)
        rows.append(dict(what="encoder", how="`set_image`, 1024x1024 photo, fp32 exact path", res=r, target=2.5,
                         extra=faults_note(r)))

        # 2. encoder fast (bf16)
        r2 = b.interleaved("encoder", sides, R["enc"], name="astronaut", hw=ENCODER_HW,
                           per_side={"ours": {"precision": "bf16"}})
        acc = workers["ours"].call("fast_encoder_accuracy", names=["coffee", "astronaut", "chelsea", "rocket"],
                                   hw=(685, 1024))
        acc_grid = workers["ours"].call("fast_encoder_accuracy", names=["coffee", "astronaut", "chelsea", "rocket"],
                                        hw=(685, 1024), boxes="grid")
        acc_rand = workers["ours"].call("masks_vs_exact", name="astronaut", hw=(685, 1024), precision="bf16")
        fast_iou = acc.get("ious", [])
        engine = {"OpenVinoEncoder": "OpenVINO", "FastTinyViT": "PyTorch"}.get(r2["ours"][-1].get("engine", ""), "?")
        rows.append(dict(what="encoder, fast mode",
                         how=f"`SamPredictor(model, encoder_precision=\"bf16\")` (runs in {engine})",
                         res=r2, target=4.0,
                         extra=(f"mask IoU vs the exact path, LiteMedSAM real weights: {len(fast_iou)} boxes around "
                                f"objects in 4 photos: mean {np.mean(fast_iou):.4f}, min {min(fast_iou):.4f} "
                                f"(all: {', '.join(f'{v:.3f}' for v in fast_iou)}); {len(acc_grid['ious'])} boxes "
                                f"ignoring the content: mean {np.mean(acc_grid['ious']):.4f}, min "
                                f"{min(acc_grid['ious']):.4f}; random MobileSAM weights, 9 click masks: min "
                                f"{min(acc_rand['ious']):.4f}; " + faults_note(r2))
                         if fast_iou else acc.get("error", "")))

        # 3. click
        print("click ...", flush=True)
        r3 = b.interleaved("click", sides, R["click"], name="astronaut", hw=CLICK_HW)
        same = len({o["digest"] for v in r3.values() for o in v}) == 1
        agree = workers["ours"].call("click_agreement", name="astronaut", hw=CLICK_HW)
        rows.append(dict(what="click", how="`predict`, 1 point, multimask, 1500x2241 photo, embedding cached",
                         res=r3, target=3.0,
                         extra=("masks identical to official" if same else
                                "masks differ from official only where logits tie the threshold (see tests)")
                         + f"; against `exact_masks=True` (bit-identical upsampling) {agree['differ']} of "
                           f"{agree['pixels']} pixels differ, all with |logit| <= {agree['max_abs_logit']:.1e} "
                           f"(certified bound {agree['bound']:.1e})"))

        # 4. everything exact
        print("everything (exact) ...", flush=True)
        ev_kw = dict(points_per_side=16)
        r4 = b.interleaved("everything", sides, R["ev"], name="astronaut", hw=EVERYTHING_HW, kwargs=ev_kw)
        n_masks = {s: v[0]["n"] for s, v in r4.items()}
        same4 = len({o["digest"] for v in r4.values() for o in v}) == 1
        # identity check with thresholds that let masks through (random weights pass few filters)
        chk_kw = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
        chk = {s: workers[s].call("everything", name="astronaut", hw=EVERYTHING_HW, kwargs=chk_kw)
               for s in ("ours", "official")}
        same_chk = chk["ours"]["digest"] == chk["official"]["digest"]
        rows.append(dict(what="everything, exact", how="`SamAutomaticMaskGenerator(points_per_side=16)`, 1024x685 photo",
                         res=r4, target=2.5,
                         extra=(f"{n_masks['ours']} vs {n_masks['official']} masks, identical: {same4}; "
                                f"with pred_iou_thresh=0, stability_score_thresh=0, 8x8: {chk['ours']['n']} vs "
                                f"{chk['official']['n']} masks, identical: {same_chk}")))

        # 5. everything: app default (fast preset) vs official default 32x32
        print("everything (app default vs official 32x32) ...", flush=True)
        fast_kw, source = app_everything_settings()
        r5 = b.interleaved("everything", ["ours", "official"], R["ev32"], warmup=0, name="astronaut",
                           hw=EVERYTHING_HW, kwargs={}, per_side={"ours": {"kwargs": fast_kw}})
        r5b = b.interleaved("everything", ["ours"], R["ev32"], warmup=0, name="astronaut", hw=EVERYTHING_HW,
                            kwargs=dict(points_per_side=16))
        rows.append(dict(what="everything, app default", how=f"ours with {source} ({fast_kw}) vs "
                         "official defaults (32x32), 1024x685 photo", res=r5, target=20.0,
                         extra=f"ours exact 16x16 (the demo's current settings): {fmt_t(med(r5b['ours']))}"))

        # recall of the fast preset vs the exhaustive 32x32 result
        print("recall ...", flush=True)
        rec = recall_block(workers["ours"], q)
        # 6. app
        app: Dict[str, Any] = {}
        if not args.no_app:
            print("app (cold start, round trip, memory) ...", flush=True)
            from benchmarks.app_bench import run_app_benchmark

            img_path = str(tmp / "click_photo.jpg")
            from PIL import Image

            Image.fromarray(photo("astronaut", CLICK_HW)).save(img_path, quality=95)
            app = run_app_benchmark(ckpt, img_path, clicks=R["app"])
            print("  app:", {k: v for k, v in app.items() if k != "click_ms"}, flush=True)

        # scaling
        print("scaling ...", flush=True)
        scaling = scaling_block(b, q)
    finally:
        for w in workers.values():
            w.close()
    load_after = os.getloadavg()
    info = machine()
    info.update(official=f"mobilesam-mirror {official_version}", load_before=load_before, load_after=load_after,
                minutes=round((time.time() - t_start) / 60, 1))
    table = render_table(rows, app, info)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_path = out / "benchmark_scaling.png"
    plot_scaling(scaling, plot_path)
    md = render_markdown(table, rows, app, rec, scaling, info, log, args, plot_path.name)
    (out / "benchmarks.md").write_text(md)
    (out / "benchmarks.json").write_text(json.dumps(
        {"info": info, "rows": [{k: v for k, v in r.items() if k != "res"} | {
            "median_s": {s: med(v) for s, v in r["res"].items()}} for r in rows],
         "app": {k: v for k, v in app.items()}, "recall": rec, "scaling": scaling}, indent=1, default=str))
    print()
    print(table)
    print(f"\nwrote {out / 'benchmarks.md'} and {plot_path}")
    return 0


def app_everything_settings() -> tuple:
    """The Everything tab's defaults (``demo.config.EVERYTHING_DEFAULTS``) when demo/ exists,
    else the core's ``fast_everything_settings()``."""
    try:
        from demo.config import EVERYTHING_DEFAULTS

        return dict(EVERYTHING_DEFAULTS), "the app's `EVERYTHING_DEFAULTS`"
    except Exception:
        from mobile_sam_core.everything_fast import fast_everything_settings

        return fast_everything_settings(), "`fast_everything_settings()`"


def recall_block(ours: Worker, quick: bool) -> Dict[str, Any]:
    """Recall of the fast preset (and of exact 16x16) against exhaustive 32x32 (IoU >= 0.8).

    Only LiteMedSAM has real weights here; at SAM's default thresholds it accepts no masks from
    point prompts (it was trained with boxes), so thresholds are relaxed to 0 for this measurement.
    """
    out: Dict[str, Any] = {}
    relaxed = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ref = ours.call("lite_everything", name="coffee", hw=EVERYTHING_HW, kwargs=dict(points_per_side=32, **relaxed))
    ex16 = ours.call("lite_everything", name="coffee", hw=EVERYTHING_HW, kwargs=dict(points_per_side=16, **relaxed))
    app_kw = app_everything_settings()[0]
    fast = ours.call("lite_everything", name="coffee", hw=EVERYTHING_HW, kwargs={**app_kw, **relaxed})
    rm = unpack(ref)
    out["lite_medsam_relaxed"] = {
        "reference_masks": len(rm),
        "exact16": recall_at_iou(rm, unpack(ex16)),
        "fast": recall_at_iou(rm, unpack(fast)),
        "times_s": {"exact32": ref["s"], "exact16": ex16["s"], "fast": fast["s"]},
    }
    default = {}
    for label, kw in (("exact32", dict(points_per_side=32)), ("app default", app_kw)):
        default[label] = ours.call("lite_everything", name="coffee", hw=EVERYTHING_HW, kwargs=kw)["n"]
    out["lite_medsam_default_thresholds_masks"] = default
    return out


def scaling_block(b: Bench, quick: bool) -> Dict[str, Any]:
    sides = ["ours", "official"]
    longest = [512, 1024, 2048, 4096] if not quick else [512, 1024, 2048, 4096]
    reps = 1 if quick else 2
    res: Dict[str, Any] = {"sizes": [], "encoder": {}, "click": {}, "everything8": {}, "prompts": {}}
    for s in sides:
        for k in ("encoder", "click", "everything8", "prompts"):
            res[k][s] = []
    for L in longest:
        hw = (round(L * 1500 / 2241), L)
        res["sizes"].append(list(hw))
        e = b.interleaved("encoder", sides, reps, name="astronaut", hw=hw)
        c = b.interleaved("click", sides, 3 if quick else 7, name="astronaut", hw=hw)
        v = b.interleaved("everything", sides, reps, warmup=0, name="astronaut", hw=hw,
                          kwargs=dict(points_per_side=8))
        for s in sides:
            res["encoder"][s].append(med(e[s]))
            res["click"][s].append(med(c[s]))
            res["everything8"][s].append(med(v[s]))
    res["n_prompts"] = [1, 4, 16, 64]
    for n in res["n_prompts"]:
        p = b.interleaved("prompts", sides, 3 if quick else 5, name="astronaut", hw=EVERYTHING_HW, n_prompts=n)
        for s in sides:
            res["prompts"][s].append(med(p[s]))
    return res


# ------------------------------------------------------------------------------------- output

def render_table(rows: List[Dict[str, Any]], app: Dict[str, Any], info: Dict[str, Any]) -> str:
    has_tuned = any("official_tuned" in r["res"] for r in rows)
    head = "| what | how measured | ours | official | speed-up | target | met |"
    sep = "|---|---|---|---|---|---|---|"
    if has_tuned:
        head = ("| what | how measured | ours | official | speed-up | official + runtime tuning | speed-up vs that "
                "| target | met |")
        sep = "|---|---|---|---|---|---|---|---|---|"
    lines = [head, sep]
    for r in rows:
        o, t = med(r["res"]["ours"]), med(r["res"]["official"])
        ratio = t / o
        cells = [r["what"], r["how"], fmt_t(o), fmt_t(t), f"**{ratio:.2f}x**"]
        if has_tuned:
            if "official_tuned" in r["res"]:
                tt = med(r["res"]["official_tuned"])
                cells += [fmt_t(tt), f"{tt / o:.2f}x"]
            else:
                cells += ["-", "-"]
        cells += [f">= {r['target']:g}x", "yes" if ratio >= r["target"] else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    if app and "error" not in app:
        ok = lambda c: "yes" if c else "**no**"  # noqa: E731
        extra = [
            ("click as a visitor feels it", "app round trip (gradio_client, `/segment_points` with `files=False`: "
             "1 point, 1500x2241 JPEG uploaded, overlay JPEG downloaded and decoded), embedding cached", f"{app['click_median_ms']:.0f} ms", "<= 150 ms", app["click_median_ms"] <= 150),
            ("cold start", "process start -> page served with the model loaded", f"{app['cold_start_s']:.1f} s",
             "<= 10 s", app["cold_start_s"] <= 10),
            ("memory", "peak RSS of the app (MobileSAM, warm cache, clicks + one everything run)",
             f"{app['peak_rss_mb']:.0f} MB", "<= 1536 MB", app["peak_rss_mb"] <= 1536),
        ]
        for what, how, val, target, met in extra:
            cells = [what, how, val, "-", "-"] + (["-", "-"] if has_tuned else []) + [target, ok(met)]
            lines.append("| " + " | ".join(cells) + " |")
    elif app:
        lines.append(f"| app rows | not measured: {app.get('error')} |")
    return "\n".join(lines)


def plot_scaling(sc: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    x = [hw[1] for hw in sc["sizes"]]
    for ax, key, title in zip(axes[:3], ("encoder", "click", "everything8"),
                              ("set_image (encoder + resize)", "click (predict, 3 masks)", "everything, 8x8 grid")):
        for side, style in (("ours", "o-"), ("official", "s--")):
            ax.plot(x, [v * 1000 for v in sc[key][side]], style, label=side)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([str(v) for v in x])
        ax.set_xlabel("image width (px), aspect 2241:1500")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax = axes[3]
    for side, style in (("ours", "o-"), ("official", "s--")):
        ax.plot(sc["n_prompts"], [v * 1000 for v in sc["prompts"][side]], style, label=side)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompts in one predict_torch batch (1024x685)")
    ax.set_ylabel("ms")
    ax.set_title("decoder batch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(table: str, rows: List[Dict[str, Any]], app: Dict[str, Any], rec: Dict[str, Any],
                    sc: Dict[str, Any], info: Dict[str, Any], log: List[str], args: Any, plot_name: str) -> str:
    cmd = "python -m benchmarks.run" + (" --quick" if args.quick else "")
    lines = [
        "# Benchmarks: mobile_sam_core vs the official MobileSAM on this machine",
        "",
        f"Generated by `{cmd}` on {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} "
        f"({info.get('minutes')} min). Medians of interleaved repeats (each side in its own process,",
        "same perturbed random MobileSAM weights, same images from scikit-image); speed-up = official / ours.",
        "",
        "## Machine",
        "",
        f"- CPU: {info.get('cpu')} ({info.get('logical_cpus')} logical CPUs; {info.get('isa')}), "
        f"{info.get('memory_gb')} GB RAM",
        f"- Python {info.get('python')}, torch {info.get('torch')} ({info.get('torch_threads')} threads), "
        f"OpenVINO {info.get('openvino')}, onnxruntime {info.get('onnxruntime')}, OpenCV {info.get('cv2')}, "
        f"C++ compiler {info.get('cxx')}, {info.get('official')}",
        f"- Load average before/after: {', '.join(f'{v:.2f}' for v in info['load_before'])} / "
        f"{', '.join(f'{v:.2f}' for v in info['load_after'])} (the cores are shared with other jobs; "
        "interleaving spreads that noise over both sides)",
        "",
        "## Results",
        "",
        table,
        "",
    ]
    for r in rows:
        if r.get("extra"):
            lines.append(f"- {r['what']}: {r['extra']}")
    lines += ["", "### Accuracy of the fast paths", ""]
    lr = rec.get("lite_medsam_relaxed", {})
    if lr:
        lines.append(
            f"- Everything, fast preset vs exhaustive 32x32 (masks matched at IoU >= 0.8), LiteMedSAM real weights, "
            f"coffee photo, thresholds relaxed to 0 (at SAM's defaults LiteMedSAM accepts "
            f"{rec['lite_medsam_default_thresholds_masks']} masks from point prompts, so there is nothing to "
            f"recall): fast recall {lr['fast']['recall']:.3f} ({lr['fast']['matched']}/{lr['reference_masks']}, "
            f"{lr['fast']['candidates']} masks), exact 16x16 recall {lr['exact16']['recall']:.3f} "
            f"({lr['exact16']['matched']}/{lr['reference_masks']}). Times: "
            + ", ".join(f"{k} {fmt_t(v)}" for k, v in lr["times_s"].items()) + ".")
        lines.append("  These masks are degenerate (LiteMedSAM's point masks are small blobs); the number that "
                     "matters, recall on real MobileSAM weights, needs `mobile_sam.pt`, which this machine cannot "
                     "download.")
    if app:
        lines += ["", "### App", ""]
        if "error" in app:
            lines.append(f"- not measured: {app['error']}")
        else:
            lines.append(f"- cold start {app['cold_start_s']:.1f} s; first click (encodes) {app['first_click_s']:.2f} s; "
                         f"click round trips (ms): {', '.join(f'{v:.0f}' for v in app['click_ms'])}; "
                         f"the same call with the download files (mask PNG, cut-out PNG, COCO RLE; the UI writes "
                         f"them after showing the mask): median {app.get('click_with_files_median_ms', float('nan')):.0f} ms; "
                         f"everything (app settings) {app.get('everything_s', float('nan')):.1f} s; "
                         f"RSS after start {app['rss_after_start_mb']:.0f} MB, peak {app['peak_rss_mb']:.0f} MB")
    lines += ["", "### Reading the table", "",
              "- *official + runtime tuning* runs the official code with the two process-wide settings that "
              "`mobile_sam_core` applies: the glibc allocator reuses freed blocks instead of returning them to "
              "the OS after every tensor (on this virtual machine each fresh 4-64 MB tensor otherwise costs "
              "thousands of page faults), and libgomp's workers spin 10,000 times instead of 300,000 after "
              "each parallel region (`GOMP_SPINCOUNT`, set on import when torch is not loaded yet). The "
              "speed-up against it is what the code changes alone buy.",
              "- Random weights make noise-like masks. The click's mask thresholding costs the same for them "
              "as for clean masks: one compiled pass computes both resizes and the threshold for every pixel.",
              "- Exact paths compute the same float32 values in a different order (embeddings within 1e-5 of the "
              "reference modules; `predict`'s boolean masks differ from thresholding PyTorch's upsampled logits "
              "only where a logit is within the certified resize bound, ~1e-4, of the threshold, and not "
              "at all with `exact_masks=True`); "
              "tests/test_fast_paths.py checks every bound. The fast paths (bf16 encoder, `fast=True` everything) "
              "are opt-in except the app's Everything tab, which uses the fast preset by default.",
              ]
    lines += ["", "## Scaling", "", f"![scaling]({plot_name})", "",
              "| image (HxW) | encoder ours | encoder official | click ours | click official | "
              "everything 8x8 ours | everything 8x8 official |", "|---|---|---|---|---|---|---|"]
    for i, hw in enumerate(sc["sizes"]):
        lines.append(f"| {hw[0]}x{hw[1]} | " + " | ".join(
            fmt_t(sc[k][s][i]) for k in ("encoder", "click", "everything8") for s in ("ours", "official")) + " |")
    lines += ["", "| prompts per batch | ours | official | speed-up |", "|---|---|---|---|"]
    for i, n in enumerate(sc["n_prompts"]):
        o, t = sc["prompts"]["ours"][i], sc["prompts"]["official"][i]
        lines.append(f"| {n} | {fmt_t(o)} | {fmt_t(t)} | {t / o:.2f}x |")
    lines += ["", "## Raw log (medians per task and side)", "", "```"] + log + ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
