"""Compare tab: two models, one image, one prompt set; both masks side by side and as a slider.

The image is the one in the input column. Clicks on this tab's canvas add points, or, in box
mode, two clicks give the corners of a box. *Compare* runs model A and then model B on the same
prompts (each loaded on first use through the shared model pool, with progress) and shows both
masks, a before/after slider, each model's encoder and decoder time and the IoU of the two masks.
*Segment everything with both* does the same for segment-everything. The stateless endpoint
``/compare`` does it for programs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
import numpy as np

from .. import config as cfg
from .. import text
from ..compare_service import (
    CompareError,
    PairResult,
    adopt_served,
    compare_everything_pair,
    compare_pair,
    default_pair,
    model_choices,
    render_pair,
    shared_pool,
    weights_note,
)
from ..core import ModelPool, WeightsUnavailableError, format_size, overlay_masks
from ..image_input import _stem
from ..services import (
    ImageLoadError,
    LoadedImage,
    PromptError,
    check_box,
    check_points,
    everything_settings,
    read_image,
    render_everything_overlay,
)
from ..state import Session
from ..ui import EVERYTHING, INTERACTIVE, AppContext, friendly

COMPARE = "compare"  # queue group: comparisons (and the model loads they trigger)
COMPARE_CONCURRENCY = 2  # one may load a big model while another compares loaded ones
DOWNLOAD = "compare-download"

POINT_FG = "Foreground point"
POINT_BG = "Background point"
BOX_CORNERS = "Box (two corner clicks)"
MODES = [POINT_FG, POINT_BG, BOX_CORNERS]

HINT = ("Click on the object to add points, or switch to *Box* and click two opposite corners; "
        "then press **Compare**.")
INTRO = ("Run **two models on the same image and prompts**: model A's mask in blue, model B's in orange, "
         "side by side and on a before/after slider, with each model's encoder and decoder time and the "
         "IoU between the two masks. Models are loaded when first used and unloaded when memory runs short.")


@dataclass(frozen=True)
class ComparePrompts:
    """This tab's prompts in working-image pixels; ``corner`` is the first click of a box."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    corner: tuple[float, float] | None = None

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None


@dataclass
class CompareTab:
    canvas: gr.Image
    slider: gr.ImageSlider
    image_a: gr.Image
    image_b: gr.Image
    info: gr.Markdown
    every_a: gr.Image
    every_b: gr.Image
    every_info: gr.Markdown
    prompts: gr.State
    model_a: gr.Dropdown
    model_b: gr.Dropdown

    @property
    def reset_outputs(self) -> list[Any]:
        return [self.canvas, self.slider, self.image_a, self.image_b, self.info, self.every_a, self.every_b,
                self.every_info, self.prompts]

    def reset_values(self, session: Session) -> list[Any]:
        image = session.image.array if session.image is not None else None
        return [image, None, None, None, HINT if image is not None else "", None, None, "", ComparePrompts()]


# ------------------------------------------------------------------------------------- helpers


def _draw_prompts(image: np.ndarray, prompts: ComparePrompts) -> np.ndarray:
    boxes = []
    if prompts.box is not None:
        boxes.append(prompts.box)
    if prompts.corner is not None:  # first corner: a small square until the second click
        x, y = prompts.corner
        r = max(3.0, max(image.shape[:2]) / 150)
        boxes.append((x - r, y - r, x + r, y + r))
    pts = np.asarray(prompts.points, dtype=np.float64).reshape(-1, 2) if prompts.points else None
    return overlay_masks(image, [], points=pts, labels=list(prompts.labels) if pts is not None else None,
                         box=np.asarray(boxes) if boxes else None)


def _time(ms: float | None) -> str:
    return "–" if ms is None else text.ms(ms)


def _encoder_text(side: Any) -> str:
    if side.encoder_cached:
        first = f"{_time(side.encoder_first_ms)} when first encoded, " if side.encoder_first_ms else ""
        return f"{first}cached now"
    return _time(side.encoder_ms)


def _result_markdown(result: PairResult) -> str:
    a, b = result.a, result.b
    rows = [
        ("encoder (image → embedding)", _encoder_text(a), _encoder_text(b)),
        ("decoder (prompt → mask)", _time(a.decoder_ms), _time(b.decoder_ms)),
        ("predicted IoU of the mask", f"{a.scores[a.best]:.3f}", f"{b.scores[b.best]:.3f}"),
        ("mask area", f"{int(a.mask.sum()):,} px", f"{int(b.mask.sum()):,} px"),
    ]
    if a.load_s or b.load_s:
        rows.append(("model loading (first use)", f"{a.load_s:.1f} s" if a.load_s else "–",
                     f"{b.load_s:.1f} s" if b.load_s else "–"))
    lines = [
        f"### IoU between the two masks: **{result.iou:.3f}**",
        f"intersection {result.intersection:,} px / union {result.union:,} px",
        "",
        f"| | A: {a.title} (blue) | B: {b.title} (orange) |",
        "|---|---|---|",
        *(f"| {r[0]} | {r[1]} | {r[2]} |" for r in rows),
    ]
    return "\n".join(lines)


def _short(title: str) -> str:
    return title.split(" (")[0]


def _side_label(letter: str, side: Any) -> str:
    enc = "encoder cached" if side.encoder_cached else f"encoder {_time(side.encoder_ms)}"
    return f"{letter}: {_short(side.title)} · {enc} · decoder {_time(side.decoder_ms)}"


def _prompt_arrays(prompts: ComparePrompts, size: tuple[int, int]):
    coords, labels = check_points([list(p) for p in prompts.points], list(prompts.labels), size)
    box = check_box(list(prompts.box), size) if prompts.box is not None else None
    return coords, labels, box


def _download_offer(avail: dict, names: list[str]) -> tuple[str, bool]:
    """Label of the download button and whether to show it (a chosen model that can be fetched)."""
    for name in dict.fromkeys(names):
        a = avail.get(name)
        if a is not None and not a.available and a.downloadable:
            return f"⬇ Download {a.title} ({format_size(a.download_bytes)})", True
    return "Download", False


def _download_button(avail: dict, names: list[str]) -> gr.Button:
    """Update for the download button (call in event handlers only: it is not rendered)."""
    label, visible = _download_offer(avail, names)
    return gr.Button(value=label, visible=visible)


# ----------------------------------------------------------------------------------------- build


def build(ctx: AppContext, session: gr.State, pool: ModelPool | None = None) -> CompareTab:
    """Create the tab's components (inside a ``gr.Tab``), its events and the ``/compare`` endpoint."""
    pool = pool or shared_pool(ctx.config)
    adopt_served(pool, ctx.models.current)  # the other tabs' model, if loaded already
    choices, avail = model_choices(pool)
    first_a, first_b = default_pair(avail)

    gr.Markdown(INTRO, elem_id="compare-intro")
    with gr.Row(equal_height=True):
        # min_width: on a phone the two stack instead of cutting labels like "SAM ViT-B · not downloaded"
        model_a = gr.Dropdown(choices, value=first_a, label="Model A (blue)", elem_id="compare-model-a", scale=3,
                              min_width=280)
        model_b = gr.Dropdown(choices, value=first_b, label="Model B (orange)", elem_id="compare-model-b", scale=3,
                              min_width=280)
        refresh = gr.Button("↻ Refresh models", size="sm", elem_id="compare-refresh", scale=1)
    note = gr.Markdown(weights_note(avail, [first_a, first_b]), elem_id="compare-weights",
                       elem_classes=["result-info"])
    offer, offered = _download_offer(avail, [first_a, first_b])
    download = gr.Button(offer, visible=offered, variant="secondary", size="sm", elem_id="compare-download")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            canvas = gr.Image(label="Click to add prompts", interactive=False, type="numpy", format="jpeg",
                              elem_id="compare-canvas", height=420, placeholder="Choose an image first",
                              buttons=["fullscreen"])
        with gr.Column(scale=2, min_width=240):
            mode = gr.Radio(MODES, value=POINT_FG, label="Next click adds", elem_id="compare-mode")
            with gr.Row():
                undo = gr.Button("↶ Undo", size="sm", elem_id="compare-undo")
                clear = gr.Button("✕ Clear prompts", size="sm", elem_id="compare-clear")
            run = gr.Button("Compare ▶", variant="primary", elem_id="compare-run")
    slider = gr.ImageSlider(label="A (blue) ◀ drag ▶ B (orange)", type="numpy", elem_id="compare-slider",
                            max_height=520, buttons=["fullscreen"])
    with gr.Row(equal_height=False):
        image_a = gr.Image(label="A", interactive=False, type="numpy", format="jpeg", elem_id="compare-a",
                           height=300, buttons=["download"])
        image_b = gr.Image(label="B", interactive=False, type="numpy", format="jpeg", elem_id="compare-b",
                           height=300, buttons=["download"])
    info = gr.Markdown("", elem_id="compare-info", elem_classes=["result-info"])
    with gr.Accordion("Segment everything with both models", open=False, elem_id="compare-everything"):
        lo, hi = cfg.POINTS_PER_SIDE_RANGE
        with gr.Row(equal_height=True):
            grid = gr.Slider(lo, hi, value=ctx.config.points_per_side, step=1, label="Grid density (points per side)",
                             elem_id="compare-grid", scale=3)
            run_every = gr.Button("Segment everything with both", elem_id="compare-everything-run", scale=1)
        with gr.Row(equal_height=False):
            every_a = gr.Image(label="A: everything", interactive=False, type="numpy", format="jpeg",
                               elem_id="compare-everything-a", height=300)
            every_b = gr.Image(label="B: everything", interactive=False, type="numpy", format="jpeg",
                               elem_id="compare-everything-b", height=300)
        every_info = gr.Markdown("", elem_id="compare-everything-info", elem_classes=["result-info"])
    prompts_state = gr.State(ComparePrompts())

    tab = CompareTab(canvas, slider, image_a, image_b, info, every_a, every_b, every_info, prompts_state,
                     model_a, model_b)
    cheap = dict(concurrency_id=INTERACTIVE, concurrency_limit=cfg.INTERACTIVE_CONCURRENCY,
                 api_visibility="private", show_progress="hidden")

    # --------------------------------------------------------------------------- prompts
    @friendly
    def on_click(current: Session, prompts: ComparePrompts, click_mode: str, evt: gr.SelectData) -> Any:
        if current.image is None:
            raise PromptError("Upload an image or pick an example first.")
        x, y = float(evt.index[0]), float(evt.index[1])
        h, w = current.size
        if not (0 <= x < w and 0 <= y < h):
            raise PromptError("That click was outside the image; click on the picture itself.")
        if click_mode == BOX_CORNERS:
            if prompts.corner is None:
                prompts = replace(prompts, corner=(x, y))
            else:
                (x0, y0) = prompts.corner
                box = (min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1)
                prompts = replace(prompts, box=box, corner=None)
        else:
            if len(prompts.points) >= cfg.MAX_POINTS:
                raise PromptError(f"At most {cfg.MAX_POINTS} points; undo or clear some first.")
            prompts = replace(prompts, points=prompts.points + ((x, y),),
                              labels=prompts.labels + (0 if click_mode == POINT_BG else 1,))
        return _draw_prompts(current.image.array, prompts), prompts

    @friendly
    def on_undo(current: Session, prompts: ComparePrompts) -> Any:
        if current.image is None:
            return gr.skip()
        if prompts.corner is not None:
            prompts = replace(prompts, corner=None)
        elif prompts.points:
            prompts = replace(prompts, points=prompts.points[:-1], labels=prompts.labels[:-1])
        elif prompts.box is not None:
            prompts = replace(prompts, box=None)
        return _draw_prompts(current.image.array, prompts), prompts

    @friendly
    def on_clear(current: Session) -> Any:
        if current.image is None:
            return gr.skip()
        return current.image.array, ComparePrompts()

    canvas.select(on_click, [session, prompts_state, mode], [canvas, prompts_state], trigger_mode="multiple",
                  **cheap)  # every click is queued (see the points tab)
    undo.click(on_undo, [session, prompts_state], [canvas, prompts_state], **cheap)
    clear.click(on_clear, [session], [canvas, prompts_state], **cheap)

    # --------------------------------------------------------------------------- models
    def on_models(a: str, b: str) -> Any:
        _, av = model_choices(pool)
        return weights_note(av, [a, b]), _download_button(av, [a, b])

    def on_refresh(a: str, b: str) -> Any:
        ch, av = model_choices(pool)
        return (gr.Dropdown(choices=ch, value=a), gr.Dropdown(choices=ch, value=b), weights_note(av, [a, b]),
                _download_button(av, [a, b]))

    def on_download(a: str, b: str, progress: gr.Progress = gr.Progress()) -> Any:
        _, av = model_choices(pool)
        name = next((n for n in (a, b) if not av[n].available and av[n].downloadable), None)
        if name is None:
            return on_refresh(a, b)
        title = av[name].title

        def on_bytes(done: int, total: int | None) -> None:
            if total:
                progress(done / total, desc=f"downloading {title}: {done / 2**20:.0f} of {total / 2**20:.0f} MB")

        progress(0.0, desc=f"downloading {title}")
        try:
            pool.download(name, on_progress=on_bytes)
        except WeightsUnavailableError as exc:
            ch, av = model_choices(pool)
            gr.Warning(f"Download of {title} failed.")
            return (gr.Dropdown(choices=ch, value=a), gr.Dropdown(choices=ch, value=b),
                    f"**Download of {title} failed.** {exc}", _download_button(av, [a, b]))
        gr.Info(f"{title} downloaded.")
        return on_refresh(a, b)

    private = dict(api_visibility="private")
    model_a.change(on_models, [model_a, model_b], [note, download], queue=False, **private)
    model_b.change(on_models, [model_a, model_b], [note, download], queue=False, **private)
    refresh.click(on_refresh, [model_a, model_b], [model_a, model_b, note, download], queue=False, **private)
    download.click(on_download, [model_a, model_b], [model_a, model_b, note, download], concurrency_id=DOWNLOAD,
                   concurrency_limit=1, show_progress="full", **private)

    # --------------------------------------------------------------------------- compare
    @friendly
    def on_compare(current: Session, prompts: ComparePrompts, a: str, b: str,
                   progress: gr.Progress = gr.Progress()) -> Any:
        if current.image is None:
            raise PromptError("Upload an image or pick an example first.")
        if prompts.empty:
            raise PromptError("No prompt yet: click on the object (or draw a box with two corner clicks) first.")
        coords, labels, box = _prompt_arrays(prompts, current.size)
        image = current.image.array
        adopt_served(pool, ctx.models.current)
        try:
            result = compare_pair(pool, image, a, b, coords, labels, box,
                                  progress=lambda f, m: progress(f, desc=m))
        except CompareError as exc:
            _, av = model_choices(pool)
            gr.Warning("These two models cannot be compared right now; see the note under the model choice.")
            return [gr.skip()] * 3 + [f"**Cannot compare.** {exc}", weights_note(av, [a, b]) or str(exc)]
        ov_a, ov_b = render_pair(image, result, coords, labels, box)
        return [(ov_a, ov_b), gr.Image(value=ov_a, label=_side_label("A", result.a)),
                gr.Image(value=ov_b, label=_side_label("B", result.b)),
                _result_markdown(result), weights_note(model_choices(pool)[1], [a, b])]

    run.click(on_compare, [session, prompts_state, model_a, model_b],
              [slider, image_a, image_b, info, note],
              concurrency_id=COMPARE, concurrency_limit=COMPARE_CONCURRENCY, api_visibility="private",
              show_progress="full", show_progress_on=[slider, info])

    @friendly
    def on_everything(current: Session, a: str, b: str, pps: float, progress: gr.Progress = gr.Progress()) -> Any:
        if current.image is None:
            raise PromptError("Upload an image or pick an example first.")
        settings = everything_settings(points_per_side=pps)
        image = current.image.array
        adopt_served(pool, ctx.models.current)
        try:
            pair = compare_everything_pair(pool, image, a, b, settings, progress=lambda f, m: progress(f, desc=m))
        except CompareError as exc:
            return [gr.skip(), gr.skip(), f"**Cannot compare.** {exc}"]
        outs = []
        for letter, run_, title in (("A", pair.a, pair.titles[0]), ("B", pair.b, pair.titles[1])):
            label = f"{letter}: {_short(title)} · {run_.count} masks · {text.ms(run_.total_ms)}"
            outs.append(gr.Image(value=render_everything_overlay(image, run_.masks), label=label))
        n = settings["points_per_side"]
        match_a = "–" if pair.matched_a is None else f"{pair.matched_a:.3f}"
        match_b = "–" if pair.matched_b is None else f"{pair.matched_b:.3f}"
        md = "\n".join([
            f"{n}×{n} grid of point prompts; predicted-IoU threshold {settings['pred_iou_thresh']:g}, "
            f"stability threshold {settings['stability_score_thresh']:g} (the Everything tab's defaults)."
            + (" A model with 0 masks found nothing that passed them (LiteMedSAM and random weights rarely do)."
               if not (pair.a.count and pair.b.count) else ""),
            "",
            f"| | A: {pair.titles[0]} | B: {pair.titles[1]} |",
            "|---|---|---|",
            f"| masks | {pair.a.count} | {pair.b.count} |",
            f"| encoder | {'cached' if pair.a.encoder_cached else text.ms(pair.a.encoder_ms)} | "
            f"{'cached' if pair.b.encoder_cached else text.ms(pair.b.encoder_ms)} |",
            f"| decoder ({n * n} prompts) + filtering | {text.ms(pair.a.decoder_ms)} | {text.ms(pair.b.decoder_ms)} |",
            f"| mean best IoU with the other model's masks | {match_a} | {match_b} |",
        ])
        return [*outs, md]

    run_every.click(on_everything, [session, model_a, model_b, grid], [every_a, every_b, every_info],
                    concurrency_id=EVERYTHING, concurrency_limit=cfg.EVERYTHING_CONCURRENCY,
                    api_visibility="private", show_progress="full")

    _build_api(ctx, pool)
    return tab


# ------------------------------------------------------------------------------------------- API


def _working(loaded: LoadedImage, coords: np.ndarray) -> np.ndarray:
    if not len(coords):
        return coords
    return np.asarray(loaded.to_working_coords(coords), dtype=np.float64).reshape(-1, 2)


def _box_working(loaded: LoadedImage, box: np.ndarray) -> np.ndarray:
    corners = _working(loaded, box.reshape(2, 2))
    h, w = loaded.array.shape[:2]
    corners[:, 0] = np.clip(corners[:, 0], 0, w)
    corners[:, 1] = np.clip(corners[:, 1], 0, h)
    return corners.reshape(4)


def _build_api(ctx: AppContext, pool: ModelPool) -> None:
    """Hidden components and the stateless ``/compare`` endpoint."""
    from ..upload import ImageInput

    with gr.Column(visible=False, elem_id="compare-api-components"):
        image = ImageInput(label="image", type="filepath")
        model_a = gr.Textbox(label="model_a", value="vit_t")
        model_b = gr.Textbox(label="model_b", value="vit_b")
        points = gr.JSON(label="points")
        labels = gr.JSON(label="labels")
        box = gr.JSON(label="box")
        overlay_a = gr.Image(label="overlay_a", type="filepath", format="png")
        overlay_b = gr.Image(label="overlay_b", type="filepath", format="png")
        result = gr.JSON(label="result")
        trigger = gr.Button("compare")

    def compare(image: str, model_a: str = "vit_t", model_b: str = "vit_b", points: Any = None, labels: Any = None,
                box: Any = None) -> tuple:
        """Run two models on the same image and prompts; return both overlays and their agreement.

        model_a, model_b: vit_t (MobileSAM), vit_b, vit_l, vit_h (SAM), lite_medsam. points: [[x, y], ...]
        in image pixels, labels 1/0 (default all 1); box: [x0, y0, x1, y1]; give points and/or a box.
        Returns model A's overlay (blue), model B's overlay (orange) and a JSON with the IoU between the
        two masks, each model's scores, encoder/decoder timings and mask (COCO RLE, image size).
        """
        try:
            loaded = read_image(image)
        except ImageLoadError as exc:
            raise gr.Error(str(exc), title="Not an image") from exc
        names = [str(model_a or "").strip(), str(model_b or "").strip()]
        try:
            coords, labs = check_points(points, labels, loaded.original_size)
            b = check_box(box, loaded.original_size)
            if not len(coords) and b is None:
                raise PromptError("No prompt given: pass points=[[x, y], ...] and/or box=[x0, y0, x1, y1].")
            pts_w = _working(loaded, coords)
            box_w = _box_working(loaded, b) if b is not None else None
            adopt_served(pool, ctx.models.current)
            res = compare_pair(pool, loaded.array, names[0], names[1], pts_w if len(pts_w) else None,
                               labs if len(pts_w) else None, box_w)
        except PromptError as exc:
            raise gr.Error(str(exc), title="Bad prompt") from exc
        except CompareError as exc:
            raise gr.Error(str(exc), title="Model unavailable") from exc
        ov_a, ov_b = render_pair(loaded.array, res, pts_w if len(pts_w) else None, labs, box_w)
        stem = _stem(image)
        to_original = loaded.mask_to_original if loaded.scale != 1.0 else None
        h, w = loaded.original_size
        info = {
            "iou": round(res.iou, 6), "intersection": res.intersection, "union": res.union,
            "model_a": res.a.summary(to_original), "model_b": res.b.summary(to_original),
            "image_size": [int(h), int(w)], "working_size": list(loaded.array.shape[:2]),
            "scale": float(loaded.scale), "points": coords.tolist(), "labels": labs.tolist(),
            "box": None if b is None else b.tolist(),
            "note": "iou, intersection and union are measured on the working image (working_size); "
                    "mask_rle is at image_size",
        }
        return ctx.store.write_overlay(f"{stem}_A", ov_a), ctx.store.write_overlay(f"{stem}_B", ov_b), info

    trigger.click(compare, [image, model_a, model_b, points, labels, box], [overlay_a, overlay_b, result],
                  api_name="compare", concurrency_id=COMPARE, concurrency_limit=COMPARE_CONCURRENCY)


__all__ = ["build", "CompareTab", "ComparePrompts"]
