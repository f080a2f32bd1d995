"""The DFT training loop: a model and tokenizer, TRL's `SFTTrainer` with medprog's losses, under a
wall-clock budget.

With ``cfg.base`` the base model is fine-tuned (LoRA via peft, or full weights); its tokenizer
writes a tag it has no token for as several ordinary tokens (SmolLM2: ``<``, ``drug``, ``_``,
``decision``, ``>``), which the tagging constraint handles, so no rows are added: an added row
starts untrained, and where input and output embeddings are tied (SmolLM2) LoRA would train the
input copy only, leaving the output rows of all tags at their initial values. Without it the
embedded default model is built from scratch — a byte-level BPE trained on the training prompts
with the tags as added tokens, and a small Qwen2.

The budget holds whatever the load: no step count is fixed from a probe. The learning rate
follows `time_cosine` over whichever is further along, the wall-clock budget or an explicit
``max_steps``, and training stops when the budget is spent, so a busy machine runs fewer steps of
the same schedule instead of stopping half way through a schedule sized for a quiet one.
Thread counts are the caller's (`medprog.engines.threads.torch_threads`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import dspy

from medprog.engines.constraints import output_mode
from medprog.optimizers.batches import collator, training_rows
from medprog.optimizers.dft_config import DFTConfig
from medprog.optimizers.losses import LossSchedule, training_loss
from medprog.optimizers.training_data import corpus_texts
from medprog.optimizers.weights import agreed_max, lora_config, save_model
from medprog.optimizers.word_noise import with_word_noise


class TrainingClock:
    """How far a budgeted run is: the further along of its steps (of ``max_steps``) and its wall-clock
    time (of ``budget_s``), from `start` (or the first question asked)."""

    def __init__(self, budget_s: float, max_steps: int) -> None:
        self.budget_s, self.max_steps = budget_s, max(1, max_steps)
        self.started: float | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def time_fraction(self) -> float:
        self.start()
        # under distributed training the clock furthest along, so every process stops and schedules alike
        return agreed_max((time.perf_counter() - self.started) / self.budget_s)  # type: ignore[operator]

    def progress(self, step: int) -> float:
        return min(1.0, max(step / self.max_steps, self.time_fraction()))

    def spent(self) -> bool:
        return self.time_fraction() >= 1.0


def time_cosine(budget_s: float, max_steps: int, warmup_steps: int, warmup_fraction: float = 0.0,
                clock: TrainingClock | None = None):
    """LR factor for ``LambdaLR``: linear warm-up (over ``warmup_steps`` steps, or the first
    ``warmup_fraction`` of the budget's time), then cosine decay over whichever is further along,
    the steps or the wall-clock budget — so a run stopped by its budget ends at a low learning rate."""
    clock = clock or TrainingClock(budget_s, max_steps)

    def factor(step: int) -> float:
        t = clock.time_fraction()
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if t < warmup_fraction:
            return max(t / warmup_fraction, 0.01)
        progress = max((step - warmup_steps) / max(1, max_steps - warmup_steps),
                       (t - warmup_fraction) / (1.0 - warmup_fraction))
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _trainer(model: Any, tokenizer: Any, rows: list[dict], args: Any, schedule: LossSchedule, clock: TrainingClock,
             lr_factor: Any, weights: tuple[float, float]) -> Any:
    """TRL's SFTTrainer with medprog's loss, the clock's learning-rate schedule and its stop."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    copy_weight, category_weight = weights

    class FusedLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = training_loss(model, inputs, schedule(self.state.global_step), copy_weight, category_weight)
            return (loss, None) if return_outputs else loss

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, lr_factor)
            return self.lr_scheduler

    class StopWhenSpent(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if clock.spent():
                control.should_training_stop = True

    torch.manual_seed(args.seed)
    return FusedLossSFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=tokenizer, data_collator=collator(tokenizer.pad_token_id),
                               callbacks=[StopWhenSpent()])


def _tags(signature: Any) -> list[str]:
    annotation = next(iter(signature.output_fields.values())).annotation
    return list(getattr(annotation, "tags", []))


def load_model(signature: Any, examples: list[dspy.Example], cfg: DFTConfig) -> tuple[Any, Any, float]:
    """``(model, tokenizer, peak learning rate)``: built from scratch (tags as added tokens), or the
    base as it is (tags in its own tokens) with LoRA."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medprog.engines.small_model import build_model, build_tokenizer

    if cfg.base is None:
        tokenizer = build_tokenizer(corpus_texts(signature, examples), cfg.vocab_size, _tags(signature))
        return build_model(tokenizer, cfg.model, cfg.seed), tokenizer, cfg.learning_rate
    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    model = AutoModelForCausalLM.from_pretrained(cfg.base, dtype=torch.float32)
    if cfg.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config())
    return model, tokenizer, cfg.lora_learning_rate if cfg.lora else cfg.base_learning_rate


def uses_choices(signature: Any, cfg: DFTConfig) -> bool:
    """Whether the run trains on the tagging constraint's choices (see ``DFTConfig.objective``)."""
    return cfg.objective == "choice" or (cfg.objective == "auto" and output_mode(signature) == "tagged")


def _sft_args(cfg: DFTConfig, out_dir: Path, max_steps: int, lr: float) -> Any:
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out_dir / "_trainer"), per_device_train_batch_size=cfg.batch_size, max_steps=max_steps,
        learning_rate=lr, weight_decay=cfg.weight_decay, logging_steps=cfg.log_every, save_strategy="no",
        report_to=[], use_cpu=not torch.cuda.is_available(), seed=cfg.seed, dataloader_num_workers=0,
        max_length=None, completion_only_loss=None, disable_tqdm=True, remove_unused_columns=False,
        max_grad_norm=1.0, gradient_checkpointing=False,  # TRL turns it on by default: 1/3 more compute
    )


def train_dft(signature: Any, examples: list[dspy.Example], out_dir: Path, cfg: DFTConfig | None = None,
              log: Any = print) -> dict[str, Any]:
    """Train and save a model (safetensors + tokenizer) to ``out_dir``; returns a training report."""
    cfg = cfg or DFTConfig()
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    model, tokenizer, lr = load_model(signature, examples, cfg)
    choice = uses_choices(signature, cfg)
    if output_mode(signature) == "tagged":  # after the tokenizer: it is built from the clean examples
        examples = with_word_noise(signature, examples, cfg.word_noise, cfg.word_noise_share, cfg.seed)
    rows = training_rows(signature, examples, tokenizer, choice)
    n_params = sum(p.numel() for p in model.parameters())
    weights = (cfg.copy_weight, cfg.category_weight) if choice else (0.0, 0.0)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    max_steps = cfg.max_steps or max(1, int(cfg.max_epochs * steps_per_epoch))
    clock = TrainingClock(max(1e-3, cfg.time_budget_s - (time.perf_counter() - t_start)), max_steps)
    warmup_steps = max(1, int(cfg.lr_warmup_fraction * max_steps)) if cfg.max_steps else 0
    lr_factor = time_cosine(clock.budget_s, max_steps, warmup_steps, 0.0 if cfg.max_steps else cfg.lr_warmup_fraction,
                            clock=clock)
    after = cfg.scratch_loss if cfg.base is None else cfg.loss
    schedule = LossSchedule(after, cfg.warmup_fraction if cfg.base is None and after == "dft" else 0.0,
                            clock.progress)
    log(f"dft: {'choice' if choice else 'vocabulary'} objective, {len(rows)} examples, {n_params / 1e6:.2f}M params, "
        f"{clock.budget_s:.0f}s budget" + (f", {max_steps} steps" if cfg.max_steps else ""))
    trainer = _trainer(model, tokenizer, rows, _sft_args(cfg, out_dir, max_steps, lr), schedule, clock, lr_factor,
                       weights)
    clock.start()
    trainer.train()
    save_model(trainer.model, tokenizer, out_dir)
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    steps = trainer.state.global_step
    report = {
        "examples": len(rows), "word_noise": [cfg.word_noise, cfg.word_noise_share], "params": n_params,
        "objective": "choice" if choice else "vocab", "copy_weight": weights[0], "category_weight": weights[1],
        "steps": steps,
        "epochs": steps / steps_per_epoch, "from_scratch": cfg.base is None,
        "loss_schedule": {"ce_fraction": schedule.switch, "after": schedule.after},
        "time_budget_s": cfg.time_budget_s, "train_wall_s": time.perf_counter() - t_start,
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h],
    }
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2))
    return report
