"""Stage 14: an HTTP server (JSON API and a page) over a stage-13 export directory.

``scripts/14_serve.py`` is its CLI. The pieces, each replaceable on its own:

* :class:`ExportedModel` (``exported_model``): reads ``EXPORT/report.json`` and the SavedModel,
  turns its raw string/float tensors into one JSON-ready dict per text;
* :class:`MicroBatcher` (``batching``): coalesces concurrent requests into one model call, run
  in a worker thread so the event loop keeps answering;
* :func:`create_app` (``app``): the FastAPI application, its error shape and the page.

What this package may import: the standard library, numpy, tensorflow, tensorflow_text, fastapi
(with starlette and pydantic, which it is built on), uvicorn, ulmfit_core and
task_export.layout (the export directory's names). Nothing of the training side (ulmfit_keras,
ulmfit_tasks, torch): a server needs only the export.
"""

from __future__ import annotations

from serving.app import create_app
from serving.batching import MicroBatcher
from serving.exported_model import ExportedModel

__all__ = ["ExportedModel", "MicroBatcher", "create_app"]
