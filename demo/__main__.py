"""``python -m demo [--host H] [--port P] [--model NAME] [--checkpoint PATH]``."""

from __future__ import annotations

import argparse
import logging

from .config import DemoConfig


def main(argv: list[str] | None = None) -> None:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="python -m demo", description="MobileSAM CPU demo (Gradio app).")
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s; "
                        "0.0.0.0 to accept other machines)")
    parser.add_argument("--port", type=int, default=defaults.port, help="port (default %(default)s)")
    parser.add_argument("--model", default=defaults.model,
                        help="model name: vit_t (MobileSAM, falls back to LiteMedSAM), lite_medsam, vit_b, ...")
    parser.add_argument("--checkpoint", default=defaults.checkpoint, help="checkpoint file for --model")
    parser.add_argument("--random-weights", action="store_true", default=defaults.random_weights,
                        help="random weights (UI development and tests; masks are meaningless)")
    parser.add_argument("--threads", type=int, default=defaults.torch_threads,
                        help="torch threads (default: the CPU cores available)")
    parser.add_argument("--max-file-size", default=defaults.max_file_size, help="upload limit (default %(default)s)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DemoConfig(host=args.host, port=args.port, model=args.model, checkpoint=args.checkpoint,
                        random_weights=args.random_weights, torch_threads=args.threads,
                        max_file_size=args.max_file_size)
    from .app import build_app, configure_torch, launch

    threads = configure_torch(config.torch_threads)
    logging.getLogger("demo").info("torch threads: %d", threads)
    launch(build_app(config), config)


if __name__ == "__main__":
    main()
