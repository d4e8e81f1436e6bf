"""llm-levels: the entry point (`make run`, and the app file of a Hugging Face Space).

Reads `.env` (the only place that does), validates the settings, and serves the Gradio app plus the
OpenAI-compatible endpoint on one port (default http://127.0.0.1:7860).
"""

import logging
import sys

from dotenv import load_dotenv

from llm_levels.config import Settings
from llm_levels.core import BackendError


def main() -> int:
    load_dotenv()
    # Text that cannot be encoded (a lone surrogate someone sent) is escaped, never a second traceback
    # ("--- Logging error ---") in the log or a failed print.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from llm_levels.web.app import serve

    print(
        f"llm-levels: serving on http://{settings.server_name}:{settings.server_port} "
        "(the local model loads in the background)",
        flush=True,
    )
    serve(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
