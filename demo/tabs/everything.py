"""Everything tab: segment the whole image with a grid of point prompts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from .. import config as cfg
from .. import text
from ..services import (
    PromptError,
    everything_settings,
    render_everything_overlay,
    segment_everything,
)
from ..state import Session
from ..ui import EVERYTHING, AppContext, ResultPanel, friendly, panel_values, result_panel

HINT = "Press “Segment everything”. Each grid point is one prompt for the decoder."


@dataclass
class EverythingTab:
    canvas: gr.Image
    panel: ResultPanel

    @property
    def reset_outputs(self) -> list[Any]:
        return [self.canvas, *self.panel.outputs]

    def reset_values(self, session: Session) -> list[Any]:
        image = session.image.array if session.image is not None else None
        return [image, *panel_values(HINT if image is not None else "", None)]


def build(ctx: AppContext, session: gr.State) -> EverythingTab:
    d = cfg.EVERYTHING_DEFAULTS
    lo, hi = cfg.POINTS_PER_SIDE_RANGE
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            canvas = gr.Image(label="All masks", interactive=False, type="numpy", format="jpeg",
                              elem_id="everything-canvas", buttons=["fullscreen", "download"], height=520,
                              placeholder="Choose an image first")
        with gr.Column(scale=2, min_width=260):
            run = gr.Button("Segment everything", variant="primary", elem_id="everything-run")
            # The result line sits right under the button: on a phone the settings below would
            # otherwise push it out of sight.
            panel = result_panel("everything", mask_label="All masks PNG")
            with gr.Accordion("Settings", open=True):
                grid = gr.Slider(lo, hi, value=ctx.config.points_per_side, step=1,
                                 label="Grid density (points per side)",
                                 info="16 → 256 prompts; 32 (SAM's default) is 4× slower",
                                 elem_id="everything-grid")
                iou = gr.Slider(0.0, 1.0, value=float(d["pred_iou_thresh"]), step=0.01,
                                label="Predicted IoU threshold", elem_id="everything-iou")
                stability = gr.Slider(0.0, 1.0, value=float(d["stability_score_thresh"]), step=0.01,
                                      label="Stability score threshold", elem_id="everything-stability")
                min_area = gr.Slider(0, cfg.MIN_REGION_AREA_MAX, value=int(d["min_mask_region_area"]), step=10,
                                     label="Minimum region area (pixels)",
                                     info="removes small islands and holes", elem_id="everything-min-area")
                fast = gr.Checkbox(value=bool(d["fast"]), label="Fast mode",
                                   info="coarse-to-fine grid that skips points already inside a mask, "
                                        "bf16 decoder; untick for SAM's exact algorithm (slower)",
                                   elem_id="everything-fast")
    tab = EverythingTab(canvas, panel)

    @friendly
    def on_run(current: Session, pps: float, iou_t: float, stab_t: float, area: float, fast_mode: bool,
               progress: gr.Progress = gr.Progress()) -> Any:
        if current.image is None:
            raise PromptError("Upload an image or pick an example first.")
        settings = everything_settings(pps, iou_t, stab_t, area, fast=fast_mode)
        served = ctx.models.get()
        image = current.image.array
        result = segment_everything(served, image, settings, progress=lambda f, msg: progress(f, desc=msg))
        overlay = render_everything_overlay(image, result.masks)
        files = ctx.store.write_everything_outputs(current.image_name, image, result, overlay)
        n = len(result.records)
        grid_n = settings["points_per_side"]
        info = (f"**{n} mask{'s' if n != 1 else ''}** in **{text.ms(result.total_ms)}** · "
                f"{grid_n}×{grid_n} grid{' (fast mode)' if settings['fast'] else ''} · {served.title}")
        if n == 0:
            info += " · nothing passed the thresholds; lower them or use a denser grid"
            if served.is_fallback:
                info += " (LiteMedSAM rarely finds objects this way: use the Box tab)"
        new = replace(current, everything_info={"count": n, "ms": result.total_ms, **settings})
        return [overlay, *panel_values(info, files), new]

    run.click(on_run, [session, grid, iou, stability, min_area, fast], [canvas, *panel.outputs, session],
              concurrency_id=EVERYTHING, concurrency_limit=cfg.EVERYTHING_CONCURRENCY,
              api_visibility="private", show_progress="full", show_progress_on=[canvas])
    return tab
