"""Per-token views of a local model: a finished answer's token table, the next-token explorer, and the
sampling settings applied to it (pure functions, no Gradio).

- :mod:`.table`: :func:`token_table` / :func:`table_rows` for an answer's tokens (``turns.Done.tokens``),
  :func:`continue_with` for the conversation that continues an answer from one of its tokens;
- :mod:`.next_token`: :func:`next_token_distribution`, the most likely next tokens from a local engine;
- :mod:`.sampling`: :func:`reshape` (temperature, top-k, top-p, as each engine applies them) and :func:`sample`.
"""

from .next_token import MAX_TOKENS, Distribution, NextToken, next_token_distribution
from .sampling import Bar, Reshaped, reshape, sample
from .table import TABLE_COLUMNS, TokenRow, continue_with, table_rows, token_rows, token_table, visible

__all__ = [
    "MAX_TOKENS",
    "TABLE_COLUMNS",
    "Bar",
    "Distribution",
    "NextToken",
    "Reshaped",
    "TokenRow",
    "continue_with",
    "next_token_distribution",
    "reshape",
    "sample",
    "table_rows",
    "token_rows",
    "token_table",
    "visible",
]
