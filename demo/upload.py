"""The image upload component (its own module: gradio writes a ``.pyi`` stub next to the module
that defines a component class, so this module holds nothing else)."""

from __future__ import annotations

from typing import Any

import gradio as gr


class ImageInput(gr.Image):
    """``gr.Image`` that hands the uploaded file to the core untouched.

    Gradio's own preprocessing opens the file with PIL and fails with a bare error for files that
    are not images; the core's ``load_image`` gives the visitor a readable message instead (and
    applies EXIF orientation and the size limits).
    """

    is_template = True  # rendered by the frontend as a plain "image" component
    # No __init__ override: gradio builds the frontend config from __init__'s signature.

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            return None
        if getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)
