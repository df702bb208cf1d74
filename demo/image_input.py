"""The shared image input: upload / paste / webcam, the examples, and the encoding status."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import gradio as gr

from . import config as cfg
from . import text
from .services import image_key, read_image, weights_help
from .state import Session
from .ui import ENCODE, INTERACTIVE, AppContext, friendly
from .upload import ImageInput

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class TabLike(Protocol):
    """A tab resets its canvas and results when a new image arrives."""

    reset_outputs: list[Any]

    def reset_values(self, session: Session) -> list[Any]: ...


@dataclass
class InputPanel:
    image: ImageInput
    status: gr.Markdown
    examples: gr.Examples | None


def example_files(folder: str | Path | None) -> list[str]:
    """Example images, sorted by name."""
    path = Path(folder) if folder else Path(__file__).resolve().parent.parent / "examples"
    if not path.is_dir():
        return []
    return sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _stem(path: str | None) -> str:
    stem = Path(path).stem if path else "image"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:40] or "image"


def build_input(ctx: AppContext) -> InputPanel:
    """The image input column (call inside a layout block)."""
    image = ImageInput(
        label="Your image", type="filepath", sources=["upload", "clipboard", "webcam"], elem_id="input-image",
        height=300, buttons=["fullscreen"],
        placeholder="Drop an image here, click to browse, or paste one (Ctrl+V)",
    )
    status = gr.Markdown(text.EMPTY_STATUS, elem_id="encode-status", elem_classes=["status-line"])
    files = example_files(ctx.config.examples_dir)
    examples = None
    if files:
        examples = gr.Examples(examples=[[f] for f in files], inputs=[image], label="Examples",
                               examples_per_page=12, elem_id="examples")
    return InputPanel(image, status, examples)


def wire_input(ctx: AppContext, panel: InputPanel, session: gr.State, banner: gr.Markdown,
               tabs: Sequence[TabLike]) -> None:
    """New image -> reset every tab at once, then encode it (with a visible status)."""
    tab_outputs: list[Any] = [c for t in tabs for c in t.reset_outputs]

    @friendly
    def on_image(path: str | None, current: Session) -> Any:
        if path is None:
            fresh = current.without_image()
            return [fresh, text.EMPTY_STATUS, gr.skip()] + [v for t in tabs for v in t.reset_values(fresh)]
        ctx.models.refresh()  # MobileSAM weights may have appeared since the last image
        served = ctx.models.get()
        loaded = read_image(path)
        fresh = current.with_image(loaded, image_key(loaded), _stem(path))
        h, w = fresh.size
        resized = ""
        if loaded.scale != 1.0:
            oh, ow = loaded.original_size
            resized = f" (downsized from {ow}×{oh})"
        status = f"**Encoding** {w}×{h}{resized} with {served.title}…"
        banner_md = text.model_banner(served, weights_help())
        return [fresh, status, banner_md] + [v for t in tabs for v in t.reset_values(fresh)]

    @friendly
    def on_encode(current: Session) -> str:
        if current.image is None:
            return gr.skip()
        from .services import encode_image

        served = ctx.models.get()
        elapsed, cached = encode_image(served, current.image.array, current.image.digest)
        h, w = current.size
        how = "already encoded (cache)" if cached else f"encoded in {text.ms(elapsed)}"
        hint = "drag a box in the Box tab" if served.is_fallback else "click on an object"
        return f"**Ready** · {w}×{h} · {how} · {served.title}. Now {hint}."

    panel.image.change(
        on_image, [panel.image, session], [session, panel.status, banner] + tab_outputs,
        # Same group as clicks: a click on the old image cannot interleave with the switch.
        api_visibility="private", concurrency_id=INTERACTIVE, concurrency_limit=cfg.INTERACTIVE_CONCURRENCY,
        show_progress="hidden",
    ).then(
        # "always_last": a new image chosen while the previous one is still encoding gets its own
        # encode afterwards (the default, "once", drops that trigger and the status stays "Encoding").
        on_encode, [session], [panel.status], api_visibility="private",
        concurrency_id=ENCODE, concurrency_limit=cfg.ENCODE_CONCURRENCY,
        show_progress="minimal", trigger_mode="always_last",
    )
