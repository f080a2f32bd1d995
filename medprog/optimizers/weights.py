"""The weights pipeline the ``dft``, ``grpo`` and ``pseudolabel`` optimizers share.

resolve the base (`resolve_base`) → pick the predictor (`prepare_target`) → LoRA settings
(`lora_config`, the one place) → train (the optimizer's own step) → merge and save (`save_model`)
→ evaluate on dev (`evaluate_weights`) → write the artifact. `run_weights` runs the sequence
around an optimizer's training function, with the torch thread count chosen by
`medprog.engines.threads.torch_threads` (the idle CPUs) unless the config names one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from medprog.engines.threads import set_torch_threads
from medprog.optimizers.request import CompileError, CompileRequest


def resolve_base(base: str | None) -> str | None:
    """The model directory of ``--base``: a model directory, an artifact with weights, or an embedded
    model name (``smollm2``); None stays None (train from scratch)."""
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
            raise CompileError(f"{path}: the artifact has no weights to fine-tune")
        return str(weights)
    return str(path)


def the_predictor(module: Any, name: str | None) -> tuple[str, Any]:
    """The predictor called ``name``, or the program's only one."""
    predictors = dict(module.named_predictors())
    if name:
        if name not in predictors:
            raise CompileError(f"no predictor {name!r}; the program has {sorted(predictors)}")
        return name, predictors[name]
    if len(predictors) != 1:
        raise CompileError(f"the program has several predictors {sorted(predictors)}; pick one with -o predictor=NAME")
    return next(iter(predictors.items()))


def lora_config(train_embeddings: bool = False) -> Any:
    """LoRA adapters on every linear layer (r=16, alpha=32); with ``train_embeddings`` the input
    embeddings are trained in full too (rows for added tag tokens start untrained)."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules="all-linear",
                      modules_to_save=["embed_tokens"] if train_embeddings else None)


def distributed_rank() -> int:
    """This process's rank under ``accelerate launch`` / torchrun (0 when not distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def wait_for_everyone() -> None:
    """A barrier across the training processes (nothing when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def agreed_max(value: float) -> float:
    """The largest ``value`` across the training processes (itself when not distributed): every
    process then takes the same decision (a wall-clock stop, a time-based learning rate)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Merge any LoRA adapters and save safetensors weights and the (left-padding) tokenizer.

    Under distributed training the first process saves; the others wait until it has."""
    if distributed_rank() != 0:
        wait_for_everyone()
        return
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out_dir)
    wait_for_everyone()


@dataclass
class WeightsTarget:
    """The program a weight optimizer trains, its one predictor, and where the artifact goes."""

    req: CompileRequest
    module: Any
    settings: dict[str, Any]
    predictor: str
    signature: Any

    @property
    def weights(self) -> Path:
        return Path(self.req.out) / "weights"

    def training_examples(self, examples: list[dspy.Example]) -> list[dspy.Example]:
        """The examples the predictor trains on (the program's own, e.g. one per tagger window)."""
        info = self.req.program
        return info.train_examples(examples, self.settings) if info.train_examples else list(examples)


def prepare_target(req: CompileRequest, predictor: str | None) -> WeightsTarget:
    """Build the program with its settings and pick the predictor to train.

    Settings the program learns from its training examples (`ProgramInfo.fit_settings`, e.g. the
    tagger's constraint limits) override its defaults but never a setting the user gave."""
    settings = req.program_settings()
    if req.program.fit_settings and req.train:
        settings = {**settings, **req.program.fit_settings(req.train, settings), **(req.settings or {})}
    module = req.program.build(**settings)
    name, pred = the_predictor(module, predictor)
    return WeightsTarget(req=req, module=module, settings=settings, predictor=name, signature=pred.signature)


def evaluate_weights(target: WeightsTarget, model_dir: str | Path) -> dict[str, Any] | None:
    """Dev metrics of the program on ``model_dir`` (the first ``dev_limit`` examples); None without dev data."""
    from medprog.engines.spec import make_engine
    from medprog.evaluation import evaluate

    req = target.req
    dev = req.run.dev_examples(req.dev)
    if not dev:
        return None
    engine = make_engine(f"local:{model_dir}", cache_dir=False)
    try:
        result = evaluate(req.program, target.module, dev, engine, None, concurrency=req.run.threads or 8,
                          lm_kwargs={"temperature": 0.0}, progress=req.run.progress)
    finally:
        engine.close()
    return {"metrics": result.metrics, "n": len(dev), "usage": result.summary["usage"]}


def run_weights(req: CompileRequest, optimizer: str, predictor: str | None, threads: int | None,
                train: Callable[[WeightsTarget], dict[str, Any]]) -> Path:
    """The pipeline around ``train(target) -> report``: it must leave merged weights in ``target.weights``;
    the dev evaluation (unless the report has one) and the artifact follow."""
    from medprog.artifact import save_artifact

    target = prepare_target(req, predictor)
    t0 = time.perf_counter()
    n_threads = set_torch_threads(threads, log=print)
    report: dict[str, Any] = {"optimizer": optimizer, **train(target), "threads": n_threads}
    if distributed_rank() != 0:  # the first process evaluates and writes the artifact
        return Path(req.out)
    if "dev" not in report:
        dev = evaluate_weights(target, target.weights)
        if dev is not None:
            report["dev"] = dev
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    return save_artifact(req.out, req.program, target.module, settings=target.settings, report=report,
                         weights=target.weights, engine={"temperature": 0.0})
