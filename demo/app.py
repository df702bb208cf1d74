"""The Gradio Blocks app: ``build_app()`` and the module-level ``demo`` used by Hugging Face Spaces.

Run it with ``python -m demo`` (see ``demo/__main__.py`` for options) or ``python demo/app.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (Hugging Face Spaces: app_file: demo/app.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "demo"  # noqa: A001  (lets the relative imports below work)
    import demo  # noqa: F401,E402  (its __init__ sets the OpenMP wait policy and hides Triton before torch loads)

import gradio as gr

from . import config as cfg
from . import text
from .api import build_api
from .config import DemoConfig
from .image_input import build_input, wire_input
from .services import ModelService, OutputStore, weights_help
from .state import Session
from .tabs import box as box_tab
from .tabs import compare as compare_tab
from .tabs import everything as everything_tab
from .tabs import points as points_tab
from .theme import CSS, THEME
from .ui import AppContext

log = logging.getLogger("demo")


def cpu_count() -> int:
    """CPU cores this process may use (respects affinity masks and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_torch(threads: int | None = None) -> int:
    """One intra-op thread per core: more threads than cores only slows matrix products down."""
    import torch

    n = threads or cpu_count()
    torch.set_num_threads(n)
    return n


def banner_update(ctx: AppContext) -> gr.Markdown:
    served = ctx.models.get()
    classes = ["model-banner", "fallback"] if served.is_fallback else ["model-banner"]
    return gr.Markdown(text.model_banner(served, weights_help()), elem_classes=classes)


def build_app(config: DemoConfig | None = None, *, models: ModelService | None = None,
              store: OutputStore | None = None, preload: bool = True) -> gr.Blocks:
    """Build the app. ``models``/``store`` may be shared between apps (tests build several)."""
    config = config or DemoConfig()
    models = models or ModelService(config.model, config.checkpoint, random_weights=config.random_weights,
                                    warm_up=config.warm_up)
    ctx = AppContext(config=config, models=models, store=store or OutputStore())
    if preload:
        models.get()  # load weights now, not on the first visitor's click

    with gr.Blocks(title=text.TITLE, delete_cache=cfg.DELETE_CACHE) as app:
        session = gr.State(Session(), time_to_live=cfg.OUTPUT_MAX_AGE_S)
        gr.Markdown(f"# {text.TITLE}\n{text.INTRO}", elem_id="title")
        served = models.current  # already loaded when preloading; else the load event fills it in
        banner = gr.Markdown(text.model_banner(served, weights_help()), elem_id="model-banner",
                             elem_classes=["model-banner", "fallback"] if served and served.is_fallback
                             else ["model-banner"])
        with gr.Accordion("How to use", open=False, elem_id="how-to"):
            gr.Markdown(text.HOW_TO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280, elem_id="input-column"):
                panel = build_input(ctx)
            with gr.Column(scale=3, min_width=320):
                # "wrap": on phones every mode stays visible instead of hiding behind a "..." menu
                with gr.Tabs(elem_id="tabs", overflow_behavior="wrap"):
                    with gr.Tab("Points", id="points", elem_id="tab-points"):
                        points = points_tab.build(ctx, session)
                    with gr.Tab("Box", id="box", elem_id="tab-box"):
                        box = box_tab.build(ctx, session)
                    with gr.Tab("Everything", id="everything", elem_id="tab-everything"):
                        everything = everything_tab.build(ctx, session)
                    with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                        compare = compare_tab.build(ctx, session)
                    with gr.Tab("About", id="about", elem_id="tab-about"):
                        gr.Markdown(text.ABOUT)
        wire_input(ctx, panel, session, banner, [points, box, everything, compare])
        build_api(ctx)
        app.load(lambda: banner_update(ctx), None, [banner], api_visibility="private", queue=False)
    app.ctx = ctx  # type: ignore[attr-defined]  (tests and other tabs reach the services here)
    return app


def launch(app: gr.Blocks, config: DemoConfig, **kwargs) -> None:
    """Queue settings and launch options shared by ``python -m demo`` and Spaces."""
    app.queue(default_concurrency_limit=1, max_size=64)
    app.launch(server_name=config.host, server_port=config.port, max_file_size=config.max_file_size,
               theme=THEME, css=CSS, show_error=False, state_session_capacity=200, **kwargs)


_default_app: gr.Blocks | None = None


def default_app() -> gr.Blocks:
    """The app configured from the environment, built once per process."""
    global _default_app
    if _default_app is None:
        logging.basicConfig(level=logging.INFO)
        config = DemoConfig()
        configure_torch(config.torch_threads)
        _default_app = build_app(config)
    return _default_app


def __getattr__(name: str) -> gr.Blocks:
    # `demo` / `app` are built on first access, not on import: importing build_app stays cheap.
    if name in ("demo", "app"):
        return default_app()
    raise AttributeError(name)


if __name__ == "__main__":  # Hugging Face Spaces runs `python demo/app.py`
    launch(default_app(), DemoConfig())
