"""Points tab: every click adds a point and shows the mask at once; three candidates to choose from."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
import numpy as np

from .. import config as cfg
from ..services import PromptError, check_points, render_prompt_overlay, segment_prompts
from ..state import PackedMasks, Prompts, Session, TabResult
from ..ui import (
    BACKGROUND,
    FOREGROUND,
    INTERACTIVE,
    POINT_MODES,
    AppContext,
    ResultPanel,
    friendly,
    offer_downloads,
    panel_values,
    prompt_info,
    prompt_summary,
    result_panel,
    thumbnail,
    thumbnail_mask,
)

HINT = "Click on an object to add a point; the mask appears at once."
TAB = "points"


@dataclass
class PointsTab:
    canvas: gr.Image
    mode: gr.Radio
    candidates: gr.Gallery
    panel: ResultPanel

    @property
    def reset_outputs(self) -> list[Any]:
        return [self.canvas, self.candidates, *self.panel.outputs]

    def reset_values(self, session: Session) -> list[Any]:
        image = session.image.array if session.image is not None else None
        return [image, [], *panel_values(HINT if image is not None else "", None)]


def _outputs(ctx: AppContext, session: Session) -> list[Any]:
    """Canvas, candidate gallery, result panel and session for the current points."""
    prompts, result = session.point_prompts, session.point_result
    image = session.image.array
    session.shown.show(TAB, result if prompts.points else None)
    if result is None or not prompts.points:
        overlay = render_prompt_overlay(image, None, prompts.points, prompts.labels)
        return [overlay, [], *panel_values(HINT, None), session]
    masks = result.masks.unpack()
    chosen = result.chosen
    overlay = render_prompt_overlay(image, masks[chosen], prompts.points, prompts.labels)
    small = thumbnail(image)
    gallery = []
    for i, score in enumerate(result.masks.scores):
        thumb = render_prompt_overlay(small, thumbnail_mask(masks[i], small.shape[:2]))
        star = "★" if i == int(np.argmax(result.masks.scores)) else ""
        gallery.append((thumb, f"{star}{i + 1} · {score:.2f}"))
    info = prompt_info(result.info, result.masks.scores, chosen)
    # Download files follow in a second step (offer_downloads).
    return [overlay, gr.Gallery(value=gallery, selected_index=chosen), *panel_values(info, None), session]


def _predict(ctx: AppContext, session: Session, prompts: Prompts) -> Session:
    """Run the model for ``prompts`` and store the result in a new session."""
    if not prompts.points:
        return replace(session, point_prompts=prompts, point_result=None)
    coords, labels = check_points([list(p) for p in prompts.points], list(prompts.labels), session.size)
    served = ctx.models.get()
    result = segment_prompts(served, session.image.array, coords, labels, multimask=True,
                             digest=session.image.digest)
    summary = prompt_summary(result, served.title, len(prompts.points), False)
    tab = TabResult(PackedMasks.pack(result.masks, result.scores), result.best, summary)
    return replace(session, point_prompts=prompts, point_result=tab)


def build(ctx: AppContext, session: gr.State) -> PointsTab:
    """Create the tab's components (inside a ``gr.Tab``) and wire their events."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            canvas = gr.Image(label="Click on the object", interactive=False, type="numpy", format="jpeg",
                              elem_id="points-canvas", buttons=["fullscreen"], height=520,
                              placeholder="Choose an image first")
        with gr.Column(scale=2, min_width=260):
            mode = gr.Radio(POINT_MODES, value=FOREGROUND, label="Next click marks", elem_id="points-mode")
            with gr.Row():
                undo = gr.Button("↶ Undo last point", size="sm", elem_id="points-undo")
                clear = gr.Button("✕ Clear points", size="sm", elem_id="points-clear")
            candidates = gr.Gallery(label="Candidates (click one)", columns=3, rows=1, height=150,
                                    allow_preview=False, object_fit="contain", elem_id="points-candidates",
                                    interactive=False)
            panel = result_panel("points")
    tab = PointsTab(canvas, mode, candidates, panel)
    outputs = [canvas, candidates, *panel.outputs, session]
    common = dict(concurrency_id=INTERACTIVE, concurrency_limit=cfg.INTERACTIVE_CONCURRENCY,
                  api_visibility="private", show_progress="minimal", show_progress_on=[canvas])

    @friendly
    def on_click(current: Session, point_mode: str, evt: gr.SelectData) -> Any:
        if current.image is None:
            raise PromptError("Upload an image or pick an example first.")
        x, y = evt.index[0], evt.index[1]
        h, w = current.size
        if not (0 <= x < w and 0 <= y < h):
            raise PromptError("That click was outside the image; click on the picture itself.")
        label = 0 if point_mode == BACKGROUND else 1
        if len(current.point_prompts.points) >= cfg.MAX_POINTS:
            raise PromptError(f"At most {cfg.MAX_POINTS} points; undo or clear some first.")
        new = _predict(ctx, current, current.point_prompts.add(x, y, label))
        return _outputs(ctx, new)

    @friendly
    def on_undo(current: Session) -> Any:
        if current.image is None or not current.point_prompts.points:
            return gr.skip()
        return _outputs(ctx, _predict(ctx, current, current.point_prompts.undo()))

    @friendly
    def on_clear(current: Session) -> Any:
        if current.image is None:
            return gr.skip()
        return _outputs(ctx, replace(current, point_prompts=Prompts(), point_result=None))

    @friendly
    def on_choose(current: Session, evt: gr.SelectData) -> Any:
        result = current.point_result
        if current.image is None or result is None or not 0 <= evt.index < len(result.masks):
            return gr.skip()
        chosen = replace(result, chosen=int(evt.index))
        return _outputs(ctx, replace(current, point_result=chosen))

    # trigger_mode "multiple": every click is queued, none is dropped ("always_last" kept only the
    # last of several clicks made while one was running). The interactive group runs one event at
    # a time and reads the session state when an event starts, so queued clicks build on each other.
    events = [
        canvas.select(on_click, [session, mode], outputs, trigger_mode="multiple", **common),
        undo.click(on_undo, [session], outputs, **common),
        clear.click(on_clear, [session], outputs, **common),
        candidates.select(on_choose, [session], outputs, **common),
    ]
    for event in events:
        offer_downloads(ctx, event, panel, session, TAB, lambda s: s.point_result)
    return tab
