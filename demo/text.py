"""Words shown in the app: title, how-to, about, banners, status lines."""

from __future__ import annotations

from typing import Any

TITLE = "MobileSAM on a CPU"

INTRO = (
    "Segment anything in your own photos, in the browser, on a plain CPU. "
    "Pick an example or upload an image (file, drag and drop, paste, webcam); it is encoded once, "
    "then every click or box is answered in a fraction of a second."
)

HOW_TO = """
**1. Choose an image** — upload, drop, paste (Ctrl+V) or use the webcam, or pick an example.
The image is encoded once (status under the image); after that, prompts are fast.

**2. Prompt the model**
- **Points**: click on the object. Each click adds a point and shows the mask at once.
  Switch to *background* to click what should be left out. *Undo* removes the last point.
  The three candidate masks are listed with their predicted IoU; click one to show it.
- **Box**: drag a box around the object. Click on the result to add refining points.
- **Everything**: press *Segment everything*; a denser grid finds smaller objects but takes longer.

**3. Download** the mask (PNG), a transparent cut-out (PNG) or all masks as COCO RLE (JSON).
The same functions are available to programs: see *Use via API* at the bottom of the page.
"""

ABOUT = """
### About MobileSAM

MobileSAM ("Faster Segment Anything: Towards Lightweight SAM for Mobile Applications",
Zhang et al., 2023) keeps the prompt encoder and mask decoder of Meta's Segment Anything (SAM)
and replaces SAM's ViT-H image encoder with a small TinyViT, trained by *decoupled distillation*
to reproduce the big encoder's image embeddings.

| | SAM ViT-H | MobileSAM |
|---|---|---|
| encoder params | 632&nbsp;M | 5.78&nbsp;M |
| prompt encoder + decoder params | 3.876&nbsp;M | 3.876&nbsp;M (same) |
| whole model | ≈&nbsp;636&nbsp;M | ≈&nbsp;9.7&nbsp;M |
| encoder, per image (GPU) | ≈&nbsp;452&nbsp;ms | ≈&nbsp;8&nbsp;ms |
| decoder, per prompt (GPU) | ≈&nbsp;4&nbsp;ms | ≈&nbsp;4&nbsp;ms |

The paper reports MobileSAM about 5 times faster and 7 times smaller than FastSAM.
The encoder sees the image resized so that its longest side is 1024 pixels (padded to a square)
and returns a 256 x 64 x 64 embedding; the decoder turns that embedding and your prompts into masks,
so only the first step is expensive, and it runs once per image.

On this demo's CPU the encoder takes well under two seconds and a click about a tenth of a second.

**LiteMedSAM**, the offline fallback, is a TinyViT-SAM trained on *medical* images with *box*
prompts (256-pixel input). On ordinary photos a box around an object works well; single clicks
and segment-everything mostly do not.

Code: the `mobile_sam_core` package of this project (segment-anything compatible API).
"""

FALLBACK_BANNER = """
**Offline fallback model: LiteMedSAM**, trained on medical images with *box* prompts.
➜ **Use the Box tab**: a box around an object gives good masks; clicks and *Everything* give poor
or empty results with this model.

<details><summary>How to get MobileSAM</summary>

{how}

</details>
"""

SLOW_MODEL_NOTE = "**{title}** is active ({source} weights)."


def model_banner(served: Any, help_text: str) -> str:
    """Markdown for the banner above the tabs."""
    if served is None:
        return "Loading the model…"
    if served.is_fallback:
        return FALLBACK_BANNER.format(how=help_text)
    source = {"random": "random (test) weights", "explicit": "weights from the given file",
              "env": "weights from $MOBILE_SAM_CHECKPOINT", "cache": "cached official weights",
              "download": "downloaded official weights", "bundled": "bundled weights"}.get(
        served.source, f"{served.source} weights")
    return f"**Model: {served.title}** · {source}"


def model_line(served: Any) -> str:
    """Short form for result panels."""
    return f"{served.title} ({served.source} weights)"


def ms(value: float) -> str:
    """Milliseconds as a compact string."""
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms"


EMPTY_STATUS = "No image yet: upload one or pick an example below."
