"""Fine-tuning the local model on a labelled file: low-rank adapters (LoRA), evaluated like the Lab's prompts.

Beyond a handful of examples, putting more of them in the prompt stops paying; training on them does.
This package trains ``peft`` LoRA adapters on the top layers of a model loaded on the transformers engine,
with a loss read only at the answer position and only over the label tokens, and scores the result with
the prompting methods' metrics (:mod:`llm_levels.icl.metrics`).

Modules, each with one job:

- :mod:`.data`: the training rows (the demo set's, split from the evaluated rows; balanced picks; overlap
  with the evaluated rows dropped).
- :mod:`.lora_model`: the classifier: adapters in a module tree sharing the loaded model's weights, the
  frozen layers run once per sentence, the shared prompt prefix once per batch.
- :mod:`.train`: the seeded training loop with progress and Stop.
- :mod:`.evaluate`: scoring evaluation rows into the Lab's run results.
- :mod:`.run`: one fine-tune from start to end (train, evaluate, save): :func:`run_finetune`.
- :mod:`.adapters`: saving (atomically), listing and loading adapters beside the model cache.
- :mod:`.curve` and :mod:`.chart`: the learning curve (prompting at k examples beside fine-tuning on n) and
  its PNG.
- :mod:`.cli`: ``python -m llm_levels icl --method finetune`` and ``--learning-curve``.

Nothing here imports torch or loads a model at import time.
"""

from .adapters import AdapterInfo, adapters_root, default_name, find_adapter, list_adapters, load_adapter_model
from .curve import Curve, CurvePoint, CurveProgress, curve_frame, learning_curve
from .data import demo_split, demo_training
from .lora_model import LoraSettings
from .run import FinetuneOutcome, run_finetune
from .train import FinetuneConfig, TrainProgress

__all__ = [
    "AdapterInfo",
    "Curve",
    "CurvePoint",
    "CurveProgress",
    "FinetuneConfig",
    "FinetuneOutcome",
    "LoraSettings",
    "TrainProgress",
    "adapters_root",
    "curve_frame",
    "default_name",
    "demo_split",
    "demo_training",
    "find_adapter",
    "learning_curve",
    "list_adapters",
    "load_adapter_model",
    "run_finetune",
]
