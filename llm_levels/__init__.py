"""llm-levels: use a large language model at three levels (chat UI, hosted API, local model) and compare them."""

__version__ = "0.1.0"
