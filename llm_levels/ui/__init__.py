"""The Gradio UI: one module per tab (chat, api, local, compare, lab), assembled by ``ui/app.py``.

Each tab module exposes ``build(runtime, session)``, called inside that tab's ``gr.Tab`` context. Backend errors
(``BackendError``) become ``gr.Error`` or a chat note only here, at the UI edge.
"""
