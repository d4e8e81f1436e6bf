"""The in-context learning lab: zero-, one- and few-shot classification of a labelled file, scored.

Modules, each with one job:

- :mod:`.data`: reading labelled files (CSV/TSV, JSONL, the Financial PhraseBank's ``sentence@label``
  lines) into rows, reporting bad lines with their line number; the shipped demo set; pool/eval splits.
- :mod:`.prompts`: the prompt templates (the seed article's, verbatim, and better ones), balanced few-shot
  example selection from the pool, and reading a label out of a free-text answer.
- :mod:`.scoring`: the *score* method: the log-likelihood of each label word after the prompt, batched,
  with the shared prompt prefix computed once (local models only).
- :mod:`.metrics`: accuracy, macro and weighted F1, per-class precision/recall/F1, the confusion matrix and
  the invalid-answer rate.
- :mod:`.runner`: running every k of a shot list by one method, with progress, Stop, and saving the
  results as JSON and per-row CSV.

The command line is ``python -m llm_levels icl`` (:mod:`llm_levels.commands.icl`), the UI the Lab tab
(:mod:`llm_levels.ui.lab`). Nothing here loads a model at import time.
"""
