"""Pieces shared by the tabs: the app context, the result panel, friendly error handling."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import numpy as np
from PIL import Image

from . import text
from .config import DemoConfig
from .services import ImageLoadError, ModelService, OutputFiles, OutputStore, PromptError, PromptResult
from .state import Session, TabResult

log = logging.getLogger("demo")

# Queue groups (see config): events with the same id share one concurrency limit.
INTERACTIVE = "interactive"
EVERYTHING = "everything"
ENCODE = "encode"
API = "api"
FILES = "files"

FOREGROUND = "Foreground (include)"
BACKGROUND = "Background (exclude)"
POINT_MODES = [FOREGROUND, BACKGROUND]


@dataclass
class AppContext:
    """What every tab needs: settings and the shared services (no visitor data)."""

    config: DemoConfig
    models: ModelService
    store: OutputStore


@dataclass
class ResultPanel:
    """Timings line and the three download buttons of a tab."""

    info: gr.Markdown
    mask: gr.DownloadButton
    cutout: gr.DownloadButton
    rle: gr.DownloadButton

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.info, self.mask, self.cutout, self.rle]

    @property
    def downloads(self) -> list[gr.components.Component]:
        return [self.mask, self.cutout, self.rle]


def result_panel(prefix: str, *, mask_label: str = "Mask PNG", cutout_label: str = "Cut-out PNG",
                 rle_label: str = "COCO RLE") -> ResultPanel:
    """Create the info line and download buttons (disabled until there is a result)."""
    info = gr.Markdown("", elem_id=f"{prefix}-info", elem_classes=["result-info"])
    with gr.Row(elem_classes=["downloads"]):
        mask = gr.DownloadButton(mask_label, interactive=False, size="sm", elem_id=f"{prefix}-download-mask")
        cutout = gr.DownloadButton(cutout_label, interactive=False, size="sm", elem_id=f"{prefix}-download-cutout")
        rle = gr.DownloadButton(rle_label, interactive=False, size="sm", elem_id=f"{prefix}-download-rle")
    return ResultPanel(info, mask, cutout, rle)


def download_values(files: OutputFiles | None) -> list[Any]:
    """Values for :attr:`ResultPanel.downloads` (disabled buttons without files)."""
    if files is None:
        return [gr.DownloadButton(value=None, interactive=False) for _ in range(3)]
    return [gr.DownloadButton(value=files.mask_png, interactive=files.mask_png is not None),
            gr.DownloadButton(value=files.cutout_png, interactive=files.cutout_png is not None),
            gr.DownloadButton(value=files.rle_json, interactive=files.rle_json is not None)]


def panel_values(info: str, files: OutputFiles | None) -> list[Any]:
    """Values for :attr:`ResultPanel.outputs`."""
    return [info, *download_values(files)]


def download_update(ctx: AppContext, current: Session, tab: str, result: TabResult | None) -> Any:
    """Download-button values for ``result`` of ``tab``, or ``gr.skip()`` once the tab shows another.

    Clicks and file writing run in different queue groups, so a newer click can be shown while
    an older result's files are still being written; those files are then not offered (the newer
    result's own step offers its files).
    """
    if current.image is None or result is None:
        return download_values(None)
    if not current.shown.is_shown(tab, result):
        return gr.skip()
    image = current.image
    to_original = image.mask_to_original if image.downsized else None  # files at the upload's size
    files = ctx.store.write_prompt_outputs(current.image_name, image.array, result.masks.unpack(),
                                           result.masks.scores, result.chosen, to_original=to_original)
    if not current.shown.is_shown(tab, result):
        return gr.skip()
    return download_values(files)


def offer_downloads(ctx: AppContext, event: Any, panel: ResultPanel, session: gr.State, tab: str,
                    result_of: Callable[[Session], TabResult | None]) -> None:
    """After ``event`` has shown its overlay, write the result's files and enable the buttons.

    Encoding a full-size cut-out PNG can take longer than the click itself, so it runs as a
    follow-up step in its own queue group: the mask is on screen first. ``result_of(session)``
    gives the tab's ``TabResult`` (or None); the tab's handlers record what they display in
    ``session.shown``.
    """

    @friendly
    def write(current: Session) -> Any:
        return download_update(ctx, current, tab, result_of(current))

    # "always_last": with the default ("once") the browser drops this step's trigger while the
    # previous click's step is still writing, and then no step offers the newest result's files.
    event.success(write, [session], panel.downloads, concurrency_id=FILES, concurrency_limit=1,
                  api_visibility="private", show_progress="hidden", trigger_mode="always_last")


def prompt_summary(result: PromptResult, served_title: str, n_points: int, has_box: bool) -> dict[str, Any]:
    """What the info line needs, kept in the session so another candidate can be shown later."""
    return {"encoder": "cached" if result.encoder_cached else text.ms(result.encoder_ms),
            "decoder": text.ms(result.decoder_ms), "model": served_title, "n_points": n_points,
            "has_box": has_box, "timings": result.timings()}


def prompt_info(summary: dict[str, Any], scores: Any, chosen: int) -> str:
    """Markdown line under a prompt result."""
    what = []
    n = summary["n_points"]
    if n:
        what.append(f"{n} point{'s' if n != 1 else ''}")
    if summary["has_box"]:
        what.append("box")
    return (f"**Mask {chosen + 1}** · predicted IoU **{float(scores[chosen]):.3f}** · "
            f"encoder {summary['encoder']} · decoder {summary['decoder']} · "
            f"{' + '.join(what)} · {summary['model']}")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn prompt and image problems into a warning toast and leave every output as it was.

    The visitor's session is untouched (``gr.skip()``), so the next click works normally.
    Unexpected errors are logged and shown as a short error message instead of a stack trace.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (PromptError, ImageLoadError) as exc:
            gr.Warning(str(exc))
            return gr.skip()
        except gr.Error:
            raise
        except Exception as exc:  # keep the session usable whatever happened
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(exc).__name__}: {str(exc)[:200]}). "
                           "Your image and prompts are kept; try again.") from exc

    return wrapper


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Downsized copy for galleries."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def thumbnail_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    if mask.shape == (h, w):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
