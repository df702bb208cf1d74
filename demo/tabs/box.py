"""Box tab: drag a box on the image; click on the result to add refining points."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator

from .. import config as cfg
from ..services import PromptError, check_box, check_points, render_prompt_overlay, segment_prompts
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
)

HINT = "Drag a box around the object; the mask appears on the right."
TAB = "box"
BOX_LABEL = "object"
MIN_BOX_SIDE = 4  # pixels; smaller drags are treated as "no box yet"


@dataclass
class BoxTab:
    annotator: image_annotator
    result: gr.Image
    mode: gr.Radio
    panel: ResultPanel

    @property
    def reset_outputs(self) -> list[Any]:
        return [self.annotator, self.result, *self.panel.outputs]

    def reset_values(self, session: Session) -> list[Any]:
        if session.image is None:
            return [None, None, *panel_values("", None)]
        image = session.image.array
        return [{"image": image, "boxes": []}, image, *panel_values(HINT, None)]


def _outputs(ctx: AppContext, session: Session) -> list[Any]:
    """Result image, result panel and session for the current box and points."""
    prompts, result = session.box_prompts, session.box_result
    image = session.image.array
    session.shown.show(TAB, result)
    if result is None:
        overlay = render_prompt_overlay(image, None, prompts.points, prompts.labels, prompts.box)
        return [overlay, *panel_values(HINT, None), session]
    masks = result.masks.unpack()
    overlay = render_prompt_overlay(image, masks[result.chosen], prompts.points, prompts.labels, prompts.box)
    # Download files follow in a second step (offer_downloads).
    return [overlay, *panel_values(prompt_info(result.info, result.masks.scores, result.chosen), None), session]


def _predict(ctx: AppContext, session: Session, prompts: Prompts) -> Session:
    if prompts.box is None and not prompts.points:
        return replace(session, box_prompts=prompts, box_result=None)
    coords, labels = check_points([list(p) for p in prompts.points], list(prompts.labels), session.size)
    box = check_box(list(prompts.box), session.size) if prompts.box is not None else None
    served = ctx.models.get()
    # One mask for a box (SAM's advice: a box is unambiguous); three for lone points.
    multimask = box is None and len(coords) == 1
    result = segment_prompts(served, session.image.array, coords, labels, box, multimask=multimask,
                             digest=session.image.digest)
    summary = prompt_summary(result, served.title, len(coords), box is not None)
    tab = TabResult(PackedMasks.pack(result.masks, result.scores), result.best, summary)
    return replace(session, box_prompts=prompts, box_result=tab)


def _box_from_annotation(value: Any) -> list[float] | None:
    boxes = (value or {}).get("boxes") or []
    if not boxes:
        return None
    b = boxes[-1]
    return [b["xmin"], b["ymin"], b["xmax"], b["ymax"]]


def build(ctx: AppContext, session: gr.State) -> BoxTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            annotator = image_annotator(
                label="Drag a box", label_list=[BOX_LABEL], label_colors=[(0, 200, 90)],
                single_box=True, disable_edit_boxes=True, use_default_label=True,
                sources=None, show_clear_button=False, show_remove_button=False, show_download_button=False,
                image_type="numpy", elem_id="box-annotator", box_min_size=MIN_BOX_SIDE, boxes_alpha=0.12,
                handles_cursor=True, enable_keyboard_shortcuts=False,
            )
            mode = gr.Radio(POINT_MODES, value=FOREGROUND, label="Clicks on the result mark", elem_id="box-mode")
            with gr.Row():
                clear_points = gr.Button("✕ Clear refining points", size="sm", elem_id="box-clear-points")
                clear_box = gr.Button("✕ Clear box", size="sm", elem_id="box-clear")
        with gr.Column(scale=1, min_width=280):
            result = gr.Image(label="Result (click to add refining points)", interactive=False, type="numpy",
                              format="jpeg", elem_id="box-result", buttons=["fullscreen"],
                              placeholder="Choose an image first")
            panel = result_panel("box")
    tab = BoxTab(annotator, result, mode, panel)
    outputs = [result, *panel.outputs, session]
    common = dict(concurrency_id=INTERACTIVE, concurrency_limit=cfg.INTERACTIVE_CONCURRENCY,
                  api_visibility="private", show_progress="minimal", show_progress_on=[result])

    @friendly
    def on_box(current: Session, value: Any) -> Any:
        if current.image is None:
            return gr.skip()
        raw = _box_from_annotation(value)
        if raw is not None and min(abs(raw[2] - raw[0]), abs(raw[3] - raw[1])) < MIN_BOX_SIDE:
            return gr.skip()  # the annotator reports a zero-size box as soon as the mouse goes down
        box = tuple(check_box(raw, current.size)) if raw is not None else None
        if box == current.box_prompts.box:
            return gr.skip()  # the annotator also fires when the app sets its image
        return _outputs(ctx, _predict(ctx, current, replace(current.box_prompts, box=box)))

    @friendly
    def on_click(current: Session, point_mode: str, evt: gr.SelectData) -> Any:
        if current.image is None:
            raise PromptError("Upload an image or pick an example first.")
        x, y = evt.index[0], evt.index[1]
        h, w = current.size
        if not (0 <= x < w and 0 <= y < h):
            raise PromptError("That click was outside the image; click on the picture itself.")
        if len(current.box_prompts.points) >= cfg.MAX_POINTS:
            raise PromptError(f"At most {cfg.MAX_POINTS} points; clear some first.")
        prompts = current.box_prompts.add(x, y, 0 if point_mode == BACKGROUND else 1)
        return _outputs(ctx, _predict(ctx, current, prompts))

    @friendly
    def on_clear_points(current: Session) -> Any:
        if current.image is None:
            return gr.skip()
        return _outputs(ctx, _predict(ctx, current, current.box_prompts.clear_points()))

    @friendly
    def on_clear_box(current: Session) -> Any:
        if current.image is None:
            return gr.skip()
        new = _predict(ctx, current, replace(current.box_prompts, box=None))
        return [{"image": current.image.array, "boxes": []}, *_outputs(ctx, new)]

    events = [
        annotator.change(on_box, [session, annotator], outputs, trigger_mode="always_last", **common),
        # every click counts (see the points tab); of a dragged box only the final one matters
        result.select(on_click, [session, mode], outputs, trigger_mode="multiple", **common),
        clear_points.click(on_clear_points, [session], outputs, **common),
        clear_box.click(on_clear_box, [session], [annotator, *outputs], **common),
    ]
    for event in events:
        offer_downloads(ctx, event, panel, session, TAB, lambda s: s.box_result)
    return tab
