"""The app's web faces: the Gradio page and the OpenAI-compatible ``/v1`` routes, on one port.

The ``/v1`` face is split in small modules, one job each:

- :mod:`.openai_routes`: the router (``create_router(runtime)``) and its routes;
- :mod:`.openai_schema`: the pydantic model of a ``POST /v1/chat/completions`` body;
- :mod:`.openai_auth`: who may call ``/v1`` (a FastAPI dependency);
- :mod:`.openai_errors`: :class:`~.openai_errors.ApiError` and the one handler that writes OpenAI's error JSON;
- :mod:`.openai_models`: the model ids ``/v1`` accepts and lists;
- :mod:`.openai_answers`: answers as the ``openai`` package's own types (completion, chunk, logprobs, usage);
- :mod:`.openai_turn`: one request's walk: waiting for the model and the line, then the answer;
- :mod:`.turn_stream`: a turn's events, produced in a worker thread and read on the event loop.
"""
