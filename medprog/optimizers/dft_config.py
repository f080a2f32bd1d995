"""`DFTConfig`: every knob of the ``dft`` optimizer (``-o KEY=VALUE``), with its default and why.

Defaults are the embedded default tagger's (trained from scratch on 2 CPU cores within the main
job's limits). ``base`` and ``seed`` come from ``--base`` and ``--seed``, ``model`` from the code:
``-o`` cannot set them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medprog.engines.small_model import SmallModelConfig


def _default_model() -> SmallModelConfig:
    return SmallModelConfig(vocab_size=2048, hidden_size=192, num_layers=4, num_heads=3, intermediate_size=512)


@dataclass
class DFTConfig:
    """Settings of `medprog.optimizers.dft_train.train_dft` and the ``dft`` compile strategy."""

    base: str | None = field(default=None, metadata={"option": False, "help": (
        "A transformers model directory to fine-tune (from --base); None builds the embedded default model "
        "from scratch.")})
    seed: int = field(default=0, metadata={"option": False, "help": "Random seed (from --seed)."})
    model: SmallModelConfig = field(default_factory=_default_model, metadata={"option": False, "help": (
        "Shape of the from-scratch model (its vocabulary is the tokenizer's, see ``vocab_size``).")})
    predictor: str | None = field(default=None, metadata={"help": (
        "Which predictor of the program to train; None: the program's only one.")})
    lora: bool = field(default=True, metadata={"help": (
        "With a base: train LoRA adapters (merged into the saved weights) instead of full weights.")})
    loss: Literal["dft", "ce"] = field(default="dft", metadata={"help": (
        "Loss on a base after any cross-entropy warm-up: DFT (sg(p)·−log p) or cross-entropy. From scratch, "
        "see ``scratch_loss``.")})
    category_weight: float = field(default=1.0, metadata={"help": (
        "Choice objective: weight of an added loss over the opening tags alone where a gold span opens "
        "(which category, given that a span opens here) — rare among the decisions, and what needs the model "
        "to read ahead in the note.")})
    copy_weight: float = field(default=1.0, metadata={"help": (
        "Choice objective: weight of an added full-vocabulary cross-entropy on every copied token (tags left "
        "to the choice loss). On single-sentence windows, 300 s of training gave dev teacher-forced category "
        "accuracy 0.85 with it and 0.69 without.")})
    objective: Literal["auto", "vocab", "choice"] = field(default="auto", metadata={"help": (
        "``vocab``: the loss over the whole vocabulary on every completion token (fused kernel). ``choice``: "
        "the loss over the tokens the tagging constraint admits, where it admits several. ``auto``: ``choice`` "
        "for a tagged output (from scratch or on a base: the whole-vocabulary loss on a pretrained base "
        "learnt to copy and predicted no spans), else ``vocab``.")})
    word_noise: float = field(default=0.1, metadata={"help": (
        "Tagged outputs: in a share of the training examples (``word_noise_share``), replace this fraction of "
        "the words outside the gold spans by general English words its notes never use "
        "(`medprog.optimizers.word_noise`), so that an unknown word is no reason to open a tag. 0: off. "
        "Chosen with the share on dev notes, clean and with unknown words around the spans "
        "(`benchmarks/tagger_unknown_words.py`): 0.1 of the words in 0.3 of the examples kept most of the "
        "clean score; 0.3 in half of them, or in an added noised copy of each, lost a third of it in the main "
        "job's 540 s.")})
    word_noise_share: float = field(default=0.3, metadata={"help": (
        "Fraction of the training examples replaced by their noised copy when ``word_noise`` is on (the rest "
        "stay clean; the number of examples does not change).")})
    scratch_loss: Literal["dft", "ce"] = field(default="ce", metadata={"help": (
        "Loss from scratch after warm-up: cross-entropy measured better (DFT cannot start from random "
        "weights, where p≈1/V scales every gradient towards zero).")})
    warmup_fraction: float = field(default=0.0, metadata={"help": (
        "From scratch with scratch_loss=dft: fraction of the run trained with cross-entropy first.")})
    lr_warmup_fraction: float = field(default=0.05, metadata={"help": (
        "Fraction of the run (of the time budget, or of max_steps when set) with a linear learning-rate "
        "warm-up before the cosine decay.")})
    time_budget_s: float = field(default=540.0, metadata={"help": (
        "Wall-clock training budget in seconds: the learning rate decays over it and training stops when it "
        "is spent, however fast the steps run.")})
    max_epochs: float = field(default=30.0, metadata={"help": "Upper bound on passes over the examples."})
    max_steps: int | None = field(default=None, metadata={"help": (
        "A fixed number of optimizer steps (the schedule runs over them); the time budget still stops training.")})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate from scratch."})
    lora_learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate of LoRA adapters."})
    base_learning_rate: float = field(default=5e-4, metadata={"help": (
        "Peak learning rate for full-weight fine-tuning of a base (lower than from scratch: it continues "
        "training).")})
    batch_size: int = field(default=8, metadata={"help": "Examples per optimizer step."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    vocab_size: int = field(default=2048, metadata={"help": "From scratch: size of the BPE vocabulary."})
    threads: int | None = field(default=None, metadata={"help": (
        "Torch threads for training; None: the cores idle when training starts "
        "(`medprog.engines.threads.torch_threads`).")})
    log_every: int = field(default=10, metadata={"help": "Log the loss every N steps."})

    def __post_init__(self) -> None:
        positive = {"time_budget_s": self.time_budget_s, "max_epochs": self.max_epochs,
                    "learning_rate": self.learning_rate, "lora_learning_rate": self.lora_learning_rate,
                    "base_learning_rate": self.base_learning_rate}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("batch_size", "log_every", "max_steps", "threads", "vocab_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("category_weight", "copy_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("word_noise", "word_noise_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("warmup_fraction", "lr_warmup_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
