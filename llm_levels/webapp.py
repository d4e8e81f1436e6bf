"""The web server: the Gradio UI and the OpenAI-compatible ``/v1`` routes on one port.

``create_app`` builds a FastAPI app, mounts the OpenAI-compatible router (``server.py``) and the Gradio
Blocks (``ui/``), and starts loading the local model in the background once the server is up, so
the page answers within seconds while the model loads behind a progress bar.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from .config import Settings

log = logging.getLogger("llm_levels")


def create_app(settings: Settings):
    """Build the ASGI app (FastAPI with Gradio mounted at ``/``) and its shared runtime."""
    import gradio as gr
    from fastapi import FastAPI

    from .runtime import AppRuntime
    from .safety import install_log_redaction
    from .server import create_router
    from .sessions import SWEEP_EVERY_S, SessionJanitor, use_lean_session_state
    from .ui.app import build_ui, CSS, THEME

    runtime = AppRuntime(settings)
    # Before anything logs: scrub every configured key (and keys sessions type) from all log records.
    install_log_redaction(runtime.secrets)
    demo = build_ui(runtime)
    demo.queue(max_size=settings.max_queue_size, default_concurrency_limit=settings.local_concurrency)
    # Bounds the memory Gradio keeps per session (MAX_SESSIONS, SESSION_*_TTL_S); see sessions.py.
    janitor = SessionJanitor.for_settings(demo, settings)
    janitor.configure()  # before mounting: Gradio copies the session cap when it builds its server app

    @asynccontextmanager
    async def lifespan(_app):
        runtime.start()
        sweeper = asyncio.create_task(janitor.run(SWEEP_EVERY_S))
        try:
            yield
        finally:
            sweeper.cancel()

    app = FastAPI(title="llm-levels", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.sessions = janitor
    app.include_router(create_router(runtime))
    app = gr.mount_gradio_app(
        app, demo, path="", server_name=settings.server_name, server_port=settings.server_port,
        footer_links=["api"], theme=THEME, css=CSS, ssr_mode=False,
    )
    use_lean_session_state(demo)  # no per-session copy of every component's config (sessions.py)
    return app, runtime


def serve(settings: Settings) -> None:
    """Serve the app on ``settings.server_name:settings.server_port`` until interrupted."""
    import uvicorn

    from .allocator import limit_malloc_arenas

    # Before any server thread exists: fewer malloc arenas keep the process's memory flat (allocator.py).
    limit_malloc_arenas(settings.malloc_arena_max)
    app, _ = create_app(settings)
    log.info("llm-levels on http://%s:%s", settings.server_name, settings.server_port)
    uvicorn.run(app, host=settings.server_name, port=settings.server_port, log_level="warning")
