"""The web server: the Gradio UI and the OpenAI-compatible ``/v1`` routes on one port.

``create_app`` builds a FastAPI app, mounts the OpenAI-compatible router and the Gradio Blocks
(``ui/``), bounds the memory Gradio keeps per session (``llm_levels/sessions.py``, plus the
version-checked hooks of :mod:`.gradio_compat`), and starts loading the local model in the background
once the server is up, so the page answers within seconds while the model loads behind a progress bar.
Bad input meets bounds before Gradio reads it: page bodies (:mod:`.body_limit`), uploads (``MAX_UPLOAD``),
event inputs made valid and refusals logged as one line (:mod:`.gradio_compat`).
``serve`` runs it with uvicorn (``app.py``, ``make run``).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from ..config import Settings

log = logging.getLogger("llm_levels")
#: Largest file the page accepts (the Lab's labelled data; real ones are well under a megabyte).
MAX_UPLOAD = "50mb"


def create_app(settings: Settings) -> tuple[Any, Any]:
    """Build the ASGI app (FastAPI with Gradio mounted at ``/``) and its shared runtime."""
    import gradio as gr
    from fastapi import FastAPI

    from ..redaction import install_log_redaction
    from ..runtime import AppRuntime
    from ..sessions import SessionLimits
    from ..ui.app import CSS, THEME, build_ui
    from .body_limit import JsonBodyLimit, page_body_limit
    from .gradio_compat import check_gradio_version, install_checked_routes, install_input_guard
    from .openai_routes import create_router

    hooks_fit = check_gradio_version()  # a loud ERROR, and Gradio's own session state, on another Gradio
    runtime = AppRuntime(settings)
    # Before anything logs: scrub every configured key (and keys sessions type) from all log records.
    install_log_redaction(runtime.secrets)
    demo = build_ui(runtime)
    if hooks_fit:  # valid text into every event, one log line per refusal, 4xx for bad ids (gradio_compat, 6-8)
        install_input_guard(demo)
        install_checked_routes()
    demo.queue(max_size=settings.max_queue_size, default_concurrency_limit=settings.local_concurrency)
    limits = SessionLimits.from_settings(settings)
    limits.apply(demo)  # before mounting: Gradio copies the session cap when it builds its server app

    @asynccontextmanager
    async def lifespan(_app):
        runtime.start()
        yield

    app = FastAPI(title="llm-levels", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.include_router(create_router(runtime))
    app = gr.mount_gradio_app(
        app,
        demo,
        path="",
        server_name=settings.server_name,
        server_port=settings.server_port,
        footer_links=["api"],
        theme=THEME,
        css=CSS,
        ssr_mode=False,
        max_file_size=MAX_UPLOAD,
    )
    app.state.blocks = demo
    app.add_middleware(JsonBodyLimit, max_bytes=page_body_limit(settings.max_prompt_chars))
    app.state.sessions = limits.install(app, demo, lean=hooks_fit)  # right after mounting, before serving
    return app, runtime


def serve(settings: Settings) -> None:
    """Serve the app on ``settings.server_name:settings.server_port`` until interrupted."""
    import uvicorn

    from ..allocator import limit_malloc_arenas

    # Before any server thread exists: fewer malloc arenas keep the process's memory flat (allocator.py).
    limit_malloc_arenas(settings.malloc_arena_max)
    app, _ = create_app(settings)
    log.info("llm-levels on http://%s:%s", settings.server_name, settings.server_port)
    uvicorn.run(app, host=settings.server_name, port=settings.server_port, log_level="warning")
