"""Look of the app: a Gradio theme and a little CSS."""

from __future__ import annotations

import gradio as gr

THEME = gr.themes.Soft(primary_hue="teal", secondary_hue="slate", radius_size="md")

CSS = """
#title h1 { margin-bottom: 0.1em; }
#title p { margin-top: 0; color: var(--body-text-color); opacity: 0.85; }
#model-banner { background: var(--background-fill-secondary); border-radius: var(--radius-lg);
                padding: 0.5em 1em; }
#model-banner.fallback { background: #fff4e0; border: 1px solid #e8a33a; border-left: 6px solid #e8a33a; }
#model-banner.fallback, #model-banner.fallback * { color: #3d2800 !important; }
#model-banner.fallback code { background: #fbe3b8; }
#model-banner details { margin-top: 0.3em; }
#model-banner summary { cursor: pointer; font-weight: 600; }
.status-line { min-height: 1.6em; font-size: 0.95em; }
.result-info { min-height: 1.6em; }
.downloads { gap: 0.4em; flex-wrap: wrap; }
.downloads button { min-width: 8em; }
/* Click targets: make it obvious the picture is clickable. */
#points-canvas img, #box-result img, #everything-canvas img { cursor: crosshair; }
/* Tables (About tab): break lines between words only, never inside "MobileSAM" or "4 ms". */
#tab-about td, #tab-about th { word-break: normal; overflow-wrap: normal; }
/* Dropdowns: the text ends before the arrow (Gradio lets long labels run under it). */
#compare-model-a input, #compare-model-b input { padding-right: 1.75em; text-overflow: ellipsis; }
/* Phones: full-width columns, smaller canvases so controls stay in view. */
@media (max-width: 640px) {
  #points-canvas, #box-result, #everything-canvas, #box-annotator { height: auto !important; max-height: 70vh; }
  .downloads button { flex: 1 1 30%; min-width: 0; }
  /* A smaller font keeps "LiteMedSAM (TinyViT, 256 px) · 39 MB" whole on a 390 px screen. */
  #compare-model-a input, #compare-model-b input { font-size: 0.85em; }
}
"""
