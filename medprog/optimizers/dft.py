"""`dft`: fine-tune the model behind a program's signature on gold demonstrations.

The examples are the program's own (`ProgramInfo.train_examples`: for the tagger, one per sentence
window), rendered exactly as the engine renders them. Loss on completion tokens only, in one of two
objectives: ``vocab``, medprog's fused DFT / cross-entropy kernel (`medprog.kernels.dft_loss`) over
the whole vocabulary, so full-vocabulary logits never exist; or ``choice`` for tagging, the loss
over the tokens the tagging constraint admits (`medprog.kernels.choice_loss`) plus a category loss
and a copy loss (see `DFTConfig`). Both run inside TRL's `SFTTrainer`. With ``base`` set, the base
model is fine-tuned (LoRA via peft, or full weights); without it the embedded default model is
built from scratch — a byte-level BPE trained on the training prompts with the tags as added
tokens, and a small Qwen2 — and trained under a wall-clock budget with cross-entropy (DFT cannot
start from random weights, where p_y ≈ 1/V scales every gradient towards zero; optionally DFT for
the last part).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dspy

from medprog.engines.small_model import SmallModelConfig, build_model, build_tokenizer
from medprog.engines.constraints import output_mode
from medprog.optimizers.training_data import corpus_texts, decision_points, tokenize_example


@dataclass
class DFTConfig:
    """Settings for `train_dft` (defaults are the embedded default model's)."""

    base: str | None = None
    """A transformers model directory to fine-tune; None builds the embedded default model from scratch."""
    lora: bool = True
    """With ``base``: train LoRA adapters (merged into the saved weights) instead of full weights."""
    loss: Literal["dft", "ce"] = "dft"
    """Loss after warm-up. From scratch, see ``scratch_loss``."""
    category_weight: float = 1.0
    """With the choice objective, weight of an added loss over the opening tags alone at the steps where
    a gold span opens: which category, given that a span opens here. Rare among the decisions (most
    steps only continue the copy), it is what needs the model to read ahead in the source note."""
    copy_weight: float = 1.0
    """With the choice objective, weight of an added full-vocabulary cross-entropy on every copied token
    of the completion (the fused kernel; tag tokens are left to the choice loss — with them in, false
    openings rose from 0.3% to 6% of the decisions). Predicting each copied token makes the model find
    its place in the source note (an induction-style lookup), the same lookup a category decision needs
    to read the words ahead:
    on single-sentence windows, 300 s of training gave dev teacher-forced category accuracy 0.85 with
    it and 0.69 without (on whole notes it had hurt: copying a 200-token note is learnt too slowly)."""
    objective: Literal["auto", "vocab", "choice"] = "auto"
    """``vocab``: the loss over the whole vocabulary (medprog's fused kernel) on every completion token.
    ``choice``: the loss over the tokens the tagging constraint admits, at the steps where it admits
    more than one (`medprog.kernels.choice_loss`) — what constrained decoding actually decides.
    ``auto``: ``choice`` for a from-scratch tagger (it need not learn to copy what the constraint
    forces) and for a base trained that way (its ``training_report.json`` says so), ``vocab`` otherwise."""
    scratch_loss: Literal["dft", "ce"] = "ce"
    """Loss for the from-scratch phase after warm-up: cross-entropy measured better (see README)."""
    warmup_fraction: float = 0.0
    """From scratch with ``scratch_loss='dft'``: fraction of steps trained with cross-entropy first."""
    time_budget_s: float = 540.0
    """Wall-clock training budget; the step count is calibrated to fit it."""
    max_epochs: float = 30.0
    max_steps: int | None = None
    """Fixed number of optimizer steps instead of calibrating to ``time_budget_s`` (which still stops training)."""
    learning_rate: float = 3e-3
    """Peak learning rate from scratch."""
    lora_learning_rate: float = 2e-4
    base_learning_rate: float = 5e-4
    """Peak learning rate for full-weight fine-tuning of a base (lower than from scratch: it continues training)."""
    batch_size: int = 8
    weight_decay: float = 0.01
    vocab_size: int = 2048
    model: SmallModelConfig = field(default_factory=lambda: SmallModelConfig(
        vocab_size=2048, hidden_size=192, num_layers=4, num_heads=3, intermediate_size=512))
    seed: int = 0
    threads: int | None = None
    log_every: int = 10


def _trained_on_choices(model_dir: str | None) -> bool:
    """Whether ``model_dir`` was trained by `train_dft` with the choice objective."""
    report = Path(model_dir or "") / "training_report.json"
    return report.is_file() and json.loads(report.read_text()).get("objective") == "choice"


def _rows(signature: Any, examples: list[dspy.Example], tokenizer, choice: bool) -> list[dict[str, list]]:
    rows = []
    for ex in examples:
        row = tokenize_example(signature, ex, tokenizer)
        if choice:
            row.update(decision_points(signature, ex, tokenizer, row))
        rows.append(row)
    return rows


def _shared_prefix(rows: list[dict[str, list]]) -> int:
    """Length of the prompt prefix every row shares (never reaching into a completion)."""
    first = rows[0]["input_ids"]
    n = min(next((i for i, lab in enumerate(r["labels"]) if lab != -100), len(r["labels"])) for r in rows)
    for r in rows[1:]:
        ids = r["input_ids"]
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    return n


def _collate(pad_id: int):
    """Right-padded batch; with decision points, flat (row, position) indices, choices and targets."""
    import torch

    def collate(rows: list[dict[str, list]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        batch = {
            "input_ids": torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                            for r in rows]),
            "labels": torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]),
        }
        if "copy_labels" in rows[0]:
            batch["copy_labels"] = torch.tensor([r["copy_labels"] + [-100] * (width - len(r["copy_labels"]))
                                                 for r in rows])
        if "dp_positions" in rows[0]:
            k = max(len(c) for r in rows for c in r["dp_choices"]) if any(r["dp_choices"] for r in rows) else 1
            batch["dp_rows"] = torch.tensor([i for i, r in enumerate(rows) for _ in r["dp_positions"]], dtype=torch.long)
            batch["dp_positions"] = torch.tensor([p for r in rows for p in r["dp_positions"]], dtype=torch.long)
            batch["dp_choices"] = torch.tensor([c + [-1] * (k - len(c)) for r in rows for c in r["dp_choices"]],
                                               dtype=torch.long).reshape(-1, k)
            batch["dp_targets"] = torch.tensor([t for r in rows for t in r["dp_targets"]], dtype=torch.long)
            batch["dp_opens"] = torch.tensor([o + [0] * (k - len(o)) for r in rows for o in r["dp_opens"]],
                                             dtype=torch.bool).reshape(-1, k)
        batch["shared_prefix"] = _shared_prefix(rows)
        return batch

    return collate


def _hidden(core, inputs: dict[str, Any]):
    """Last hidden states from position ``offset`` on, and ``offset``.

    Rows of a batch share their first ``shared_prefix`` tokens (the system prompt and the chat
    template up to the note): that prefix is run once, its key/value cache repeated across the
    batch, and only each row's own tokens are run on top — same states, same gradients, a
    fraction of the compute when the prompt is long and the examples short.
    """
    import torch

    body, ids, mask = core.get_decoder(), inputs["input_ids"], inputs.get("attention_mask")
    p = int(inputs.get("shared_prefix", 0))
    if p < 2 or ids.shape[0] < 2:
        return body(input_ids=ids, attention_mask=mask).last_hidden_state, 0
    b, t = ids.shape
    pre = body(input_ids=ids[:1, :p], use_cache=True)
    cache = pre.cache
    cache.batch_repeat_interleave(b)
    rest = body(input_ids=ids[:, p:], attention_mask=mask, cache=cache, use_cache=False,
                position_ids=torch.arange(p, t)[None].expand(b, t - p)).last_hidden_state
    return torch.cat([pre.last_hidden_state[:, -1:].expand(b, 1, -1), rest], dim=1), p - 1


def _loss(model, inputs: dict[str, Any], loss_type: str, copy_weight: float = 0.0, category_weight: float = 0.0):
    """The training loss for one batch: fused full-vocabulary kernel, or the constraint's choices
    (plus ``category_weight`` times the loss over the opening tags alone where a gold span opens,
    plus ``copy_weight`` times the full-vocabulary cross-entropy)."""
    from medprog.kernels.choice_loss import choice_loss
    from medprog.kernels.dft_loss import fused_linear_dft_loss

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = core.get_output_embeddings()
    hidden, offset = _hidden(core, inputs)
    labels = inputs["labels"][:, offset + 1:].contiguous()
    if "dp_positions" in inputs:
        picked = hidden[inputs["dp_rows"], inputs["dp_positions"] - offset]
        choices, targets = inputs["dp_choices"], inputs["dp_targets"]
        loss = choice_loss(picked, head.weight, choices, targets, loss_type=loss_type)
        opens = inputs["dp_opens"]
        at_open = opens.gather(1, targets[:, None]).squeeze(1)
        if category_weight and bool(at_open.any()):
            loss = loss + category_weight * choice_loss(picked[at_open], head.weight,
                                                        choices[at_open].masked_fill(~opens[at_open], -1),
                                                        targets[at_open], loss_type=loss_type)
        if copy_weight:
            copied = inputs["copy_labels"][:, offset + 1:].contiguous()
            loss = loss + copy_weight * fused_linear_dft_loss(hidden[:, :-1].contiguous(), head.weight, copied,
                                                              loss_type=loss_type)
        return loss
    return fused_linear_dft_loss(hidden[:, :-1].contiguous(), head.weight, labels, loss_type=loss_type)


def time_cosine(budget_s: float, max_steps: int, warmup_steps: int):
    """LR factor for ``LambdaLR``: linear warm-up, then cosine decay over whichever is further
    along, the steps or the wall-clock budget — so a run stopped by its budget ends at a low
    learning rate even when the step-time estimate was off (other work on the cores, long batches)."""
    start: list[float] = []

    def factor(step: int) -> float:
        if not start:
            start.append(time.perf_counter())
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = max((step - warmup_steps) / max(1, max_steps - warmup_steps),
                       (time.perf_counter() - start[0]) / budget_s)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class _LossSchedule:
    """Which loss a step uses: cross-entropy for the first ``switch`` steps, then ``after``."""

    def __init__(self, switch: int, after: str) -> None:
        self.switch, self.after = switch, after

    def __call__(self, step: int) -> str:
        return "ce" if step < self.switch else self.after


def _make_trainer(model, tokenizer, dataset, args, schedule: _LossSchedule, budget_s: float, copy_weight: float,
                  category_weight: float):
    import torch
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class FusedLossSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is medprog's fused, chunked DFT / cross-entropy kernel."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = _loss(model, inputs, schedule(self.state.global_step), copy_weight, category_weight)
            return (loss, None) if return_outputs else loss

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer,
                    time_cosine(budget_s, num_training_steps, self.args.get_warmup_steps(num_training_steps)))
            return self.lr_scheduler

    class Budget(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if time.perf_counter() - self.start > budget_s:
                control.should_training_stop = True

    torch.manual_seed(args.seed)
    return FusedLossSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               data_collator=_collate(tokenizer.pad_token_id), callbacks=[Budget()])


def _calibrate_step_time(model, rows, batch_size: int, pad_id: int, copy_weight: float) -> float:
    """Seconds per optimizer step on a representative batch (forward + backward)."""
    batch = _collate(pad_id)(sorted(rows, key=lambda r: len(r["input_ids"]))[len(rows) // 2: len(rows) // 2 + batch_size])
    model.train()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        loss = _loss(model, batch, "ce", copy_weight)
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return min(times) * 1.15  # the optimizer step and data loading on top


def train_dft(signature: Any, examples: list[dspy.Example], out_dir: Path, cfg: DFTConfig | None = None,
              log: Any = print) -> dict[str, Any]:
    """Train and save a model (safetensors + tokenizer) to ``out_dir``; returns a training report."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    cfg = cfg or DFTConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    from_scratch = cfg.base is None
    tags = list(next(iter(signature.output_fields.values())).annotation.tags) \
        if hasattr(next(iter(signature.output_fields.values())).annotation, "tags") else []
    if from_scratch:
        tokenizer = build_tokenizer(corpus_texts(signature, examples), cfg.vocab_size, tags)
        model = build_model(tokenizer, cfg.model, cfg.seed)
        schedule = _LossSchedule(0, cfg.scratch_loss)
        lr = cfg.learning_rate
    else:
        tokenizer = AutoTokenizer.from_pretrained(cfg.base)
        model = AutoModelForCausalLM.from_pretrained(cfg.base, dtype=torch.float32)
        missing = [t for t in (f"<{x}>" for x in tags) if t not in tokenizer.get_vocab()]
        if missing:
            from medprog.engines.small_model import tag_tokens

            tokenizer.add_tokens(tag_tokens(tags))
            model.resize_token_embeddings(len(tokenizer))
        schedule = _LossSchedule(0, cfg.loss)
        lr = cfg.lora_learning_rate if cfg.lora else cfg.base_learning_rate
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                     target_modules="all-linear",
                                                     modules_to_save=["embed_tokens"] if missing else None))
    choice = cfg.objective == "choice" or (cfg.objective == "auto" and output_mode(signature) == "tagged"
                                           and (from_scratch or _trained_on_choices(cfg.base)))
    rows = _rows(signature, examples, tokenizer, choice)
    n_params = sum(p.numel() for p in model.parameters())
    copy_weight = cfg.copy_weight if choice else 0.0
    category_weight = cfg.category_weight if choice else 0.0
    step_s = _calibrate_step_time(model, rows, cfg.batch_size, tokenizer.pad_token_id, copy_weight)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    budget_left = cfg.time_budget_s - (time.perf_counter() - t_start)
    # the step estimate sizes warm-up; the budget (via `time_cosine` and the stop callback) ends the run
    max_steps = cfg.max_steps or max(1, min(int(budget_left / step_s), int(cfg.max_epochs * steps_per_epoch)))
    if from_scratch and cfg.scratch_loss == "dft":
        schedule.switch = int(cfg.warmup_fraction * max_steps)
    log(f"dft: {'choice' if choice else 'vocabulary'} objective, {len(rows)} examples, {n_params / 1e6:.2f}M params, ~{step_s:.2f}s/step, {max_steps} steps "
        f"({max_steps / steps_per_epoch:.1f} epochs) in a {cfg.time_budget_s:.0f}s budget")
    args = SFTConfig(
        output_dir=str(out_dir / "_trainer"), per_device_train_batch_size=cfg.batch_size, max_steps=max_steps,
        learning_rate=lr, warmup_steps=max(1, int(0.05 * max_steps)),
        weight_decay=cfg.weight_decay, logging_steps=cfg.log_every, save_strategy="no", report_to=[],
        use_cpu=not torch.cuda.is_available(), seed=cfg.seed, dataloader_num_workers=0,
        max_length=None, completion_only_loss=None, disable_tqdm=True, remove_unused_columns=False,
        max_grad_norm=1.0, gradient_checkpointing=False,  # TRL turns it on by default: 1/3 more compute
    )
    trainer = _make_trainer(model, tokenizer, Dataset.from_list(rows), args, schedule,
                            cfg.time_budget_s - (time.perf_counter() - t_start), copy_weight, category_weight)
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out_dir)
    import shutil

    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    report = {
        "examples": len(rows), "params": n_params, "objective": "choice" if choice else "vocab",
        "copy_weight": copy_weight, "category_weight": category_weight,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.global_step / steps_per_epoch, "from_scratch": from_scratch,
        "loss_schedule": {"ce_steps": schedule.switch, "after": schedule.after},
        "train_wall_s": time.perf_counter() - t_start,
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in history],
    }
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2))
    return report


# --- compile strategy ---------------------------------------------------------------------

def _the_predictor(module: Any, name: str | None) -> tuple[str, Any]:
    from medprog.optimizers.base import CompileError

    predictors = dict(module.named_predictors())
    if name:
        if name not in predictors:
            raise CompileError(f"no predictor {name!r}; the program has {sorted(predictors)}")
        return name, predictors[name]
    if len(predictors) != 1:
        raise CompileError(f"the program has several predictors {sorted(predictors)}; pick one with -o predictor=NAME")
    return next(iter(predictors.items()))


def _base_model_dir(base: str | None) -> str | None:
    """``--base`` may be a model directory, an artifact with weights, or an embedded model (``smollm2``)."""
    if base is None:
        return None
    from medprog.artifact import is_artifact
    from medprog.engines.embedded import resolve

    embedded = resolve(str(base))
    if embedded is not None:
        return str(embedded)

    path = Path(base)
    if is_artifact(path):
        weights = path / "weights"
        if not (weights / "config.json").is_file():
            from medprog.optimizers.base import CompileError

            raise CompileError(f"{path}: the artifact has no weights to fine-tune")
        return str(weights)
    return str(path)


def dft_config_from_options(options: dict[str, Any], seed: int) -> DFTConfig:
    """A `DFTConfig` from ``-o key=value`` options (any DFTConfig field)."""
    cfg = DFTConfig(seed=seed, base=_base_model_dir(options.get("base")))
    for key, value in options.items():
        if key in DFTConfig.__dataclass_fields__ and key not in ("base", "model", "seed"):
            setattr(cfg, key, type(getattr(cfg, key))(value) if getattr(cfg, key) is not None else value)
    return cfg


def compile_dft(req: Any) -> Path:
    """``medprog compile PROGRAM --optimizer dft``: train weights, evaluate on dev, save the artifact."""
    from medprog.artifact import save_artifact
    from medprog.engines.spec import make_engine
    from medprog.evaluation import evaluate
    from medprog.optimizers.base import CompileError

    info = req.program
    if not req.train:
        raise CompileError("the dft optimizer needs gold demonstrations (--train)")
    settings = {**info.defaults, **(req.options.get("settings") or {})}
    module = info.build(**settings)
    _, predictor = _the_predictor(module, req.options.get("predictor"))
    cfg = dft_config_from_options(req.options, req.seed)
    out = Path(req.out)
    weights = out / "weights"
    t0 = time.perf_counter()
    train = info.train_examples(req.train, settings) if info.train_examples else req.train
    training = train_dft(predictor.signature, train, weights, cfg)
    report: dict[str, Any] = {"optimizer": "dft", "training": training}
    dev = req.dev[: int(req.options.get("dev_limit", len(req.dev)))]
    if dev:
        engine = make_engine(f"local:{weights}", cache_dir=False)
        result = evaluate(info, module, dev, engine, None, concurrency=8, lm_kwargs={"temperature": 0.0},
                          progress=bool(req.options.get("progress", False)))
        report["dev"] = {"metrics": result.metrics, "n": len(dev), "usage": result.summary["usage"]}
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    return save_artifact(out, info, module, settings=settings, report=report, weights=weights,
                         engine={"temperature": 0.0})
