"""Stage 14: serve a stage-13 export directory over HTTP (JSON API and a page).

Loads EXPORT/report.json and EXPORT/saved_model and answers POST /predict with a JSON body
{"texts": ["...", ...]}, GET /healthz, and GET / (a page to try the model in a browser, offline).
Concurrent requests are batched into one model call. Binds 127.0.0.1 unless --host says
otherwise: there is no authentication, so expose it beyond this machine only behind a proxy.
Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import click

from ulmfit_core.quiet_tf import quiet_tensorflow

# TensorFlow prints its C++ start-up log lines while it is first imported: here, quieted.
with quiet_tensorflow(sys.argv[1:]):
    import tensorflow  # noqa: F401

import uvicorn

from serving import ExportedModel, create_app
from ulmfit_core.cli import run_stage, verbose_option

logger = logging.getLogger("14_serve")


@click.command(help=__doc__)
@click.option(
    "--export-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The stage-13 export directory (holds report.json and saved_model/).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 listens on every interface.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="TCP port."
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="The most texts in one model call; concurrent requests are batched up to it.",
)
@click.option(
    "--max-texts",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="The most texts in one request (more: HTTP 413).",
)
@click.option(
    "--max-chars",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="The most characters in one text (more: HTTP 413).",
)
@verbose_option
def main(
    export_dir: Path,
    host: str,
    port: int,
    max_batch: int,
    max_texts: int,
    max_chars: int,
    verbose: bool,
) -> None:
    def work() -> None:
        model = ExportedModel.load(export_dir)
        app = create_app(model, max_batch=max_batch, max_texts=max_texts, max_chars=max_chars)
        url_host = f"[{host}]" if ":" in host else host
        # uvicorn says "Uvicorn running on URL" once it listens (or why it could not bind).
        logger.info("starting the server on http://%s:%d/ (the page at /)", url_host, port)
        # uvicorn stops gracefully on Ctrl-C / SIGTERM, then re-raises the signal: not an error.
        with contextlib.suppress(KeyboardInterrupt):
            # log_config=None: uvicorn logs through our handlers; each request only with -v.
            uvicorn.run(app, host=host, port=port, log_config=None, access_log=verbose)
        logger.info("server stopped")

    run_stage(work, verbose)


if __name__ == "__main__":
    main()
