"""The local engines: what runs a local model in this process, and the line in front of each.

- :mod:`.llama_cpp`: llama.cpp (the ``xllamacpp`` wheel) on a GGUF file read as is: the default engine.
- the ``transformers`` engine: :mod:`.transformers_loader` (loading) and
  :mod:`llm_levels.backends.local_hf` (generating): the code level 3 teaches.
"""

from __future__ import annotations

#: Engine names, as users pick them (``LOCAL_ENGINE``, the Local tab, ``--engine``).
LLAMA_CPP = "llama.cpp"
TRANSFORMERS = "transformers"
ENGINES: tuple[str, ...] = (LLAMA_CPP, TRANSFORMERS)
