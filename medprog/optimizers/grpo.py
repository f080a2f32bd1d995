"""`grpo`: reinforce a compiled program's model with TRL's `GRPOTrainer`.

Rewards come from the program's own metric on each sampled completion: the metric keys the
program declares (`ProgramInfo.reward_metrics`; for the tagger, exact-span F1 and token F1
against gold), else its per-example score (for a choice output, the exact letter).
Several rewards are aggregated with TRL's ``multi_objective_aggregation``.

A ``TaggedText`` output is sampled *under its constraint*, as it is decoded at inference
(a TRL ``rollout_func`` running medprog's tagging automaton): every rollout is a faithful copy
of the note, and the loss covers only the tokens the constraint left to the model (the
tag decisions; forced copy tokens are masked out like tool output). With ``constrained``
off, rollouts are free and a fidelity reward (1 for a faithful, well-formed copy) joins
the metric rewards. A lone choice output (a multiple-choice letter) is likewise sampled under
its choice constraint narrowed to the example's own options (`choice_rollouts`): one letter and
the end-of-turn token per rollout, the prompt exactly the inference prompt. LoRA adapters (or
full weights) on the artifact's weights; the merged model is saved as a new artifact.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dspy

from medprog.engines.constraints import ConstraintViolation, check_text, constraint_for, output_mode, parse_output
from medprog.optimizers.choice_rollouts import choice_rollouts
from medprog.optimizers.config import parse_options
from medprog.optimizers.grpo_config import GRPOConfig
from medprog.optimizers.request import CompileError, CompileRequest
from medprog.optimizers.training_data import call_signature, prompt_messages
from medprog.optimizers.weights import WeightsTarget, lora_config, resolve_base, run_weights, save_model


def _text(completion: Any) -> str:
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return str(completion)


def reward_functions(info: Any, signature: Any, examples: dict[str, dspy.Example],
                     constrained: bool = False) -> list[Callable]:
    """Reward callables in TRL's ``fn(prompts, completions, **columns) -> list[float]`` form."""

    def parsed(text: str, ex: dspy.Example) -> dict[str, Any] | None:
        sig = call_signature(signature, ex)
        try:
            check_text(constraint_for(sig, ex.inputs().toDict()), text)
            return parse_output(sig, text)
        except ConstraintViolation:
            return None

    if info.reward_metrics:

        def per_note(key: str) -> Callable:
            def reward(prompts, completions, example_id, **_: Any) -> list[float]:
                out = []
                for text, i in zip(map(_text, completions), example_id):
                    values = parsed(text, examples[i])
                    if values is None:
                        out.append(0.0)
                        continue
                    rec = info.to_record(examples[i], dspy.Prediction(**values))
                    out.append(float(info.metrics([examples[i]], [rec])[key]))
                return out

            reward.__name__ = f"{key}_reward"
            return reward

        def fidelity_reward(prompts, completions, example_id, **_: Any) -> list[float]:
            return [float(parsed(t, examples[i]) is not None) for t, i in zip(map(_text, completions), example_id)]

        rewards = [per_note(key) for key in info.reward_metrics]
        return rewards if constrained else [*rewards, fidelity_reward]

    def metric_reward(prompts, completions, example_id, **_: Any) -> list[float]:
        out = []
        for text, i in zip(map(_text, completions), example_id):
            values = parsed(text.strip(), examples[i])
            out.append(0.0 if values is None else float(info.score(examples[i], dspy.Prediction(**values))))
        return out

    return [metric_reward]


def tagged_rollouts(signature: Any, examples: list[dspy.Example], tokenizer, temperature: float) -> Callable:
    """A TRL ``rollout_func`` sampling each completion under its note's tagging constraint.

    Returns per rollout the prompt and completion ids (ending with the end-of-turn token) and an
    ``env_mask`` that is 1 only where the constraint admitted more than one token, so the policy
    loss is spent on the model's decisions, not on the copy the constraint forces.
    """
    import torch
    from transformers import LogitsProcessorList

    from medprog.engines.local import end_of_turn_id, render_prompt
    from medprog.engines.tagging_processor import TaggingLogitsProcessor, automaton_for

    (_, field), = signature.output_fields.items()
    source, tags = field.annotation.source, list(field.annotation.tags)
    by_prompt = {json.dumps(prompt_messages(signature, ex)): ex for ex in examples}
    eot, pad = end_of_turn_id(tokenizer), tokenizer.pad_token_id

    def automaton(ex: dspy.Example):
        return automaton_for(str(ex.inputs()[source]), tags, tokenizer, eot)

    def rollout(prompts: list, trainer: Any) -> dict[str, Any]:
        exs = [by_prompt[json.dumps(p)] for p in prompts]
        encoded = [render_prompt(tokenizer, p) for p in prompts]
        width = max(map(len, encoded))
        automata = [automaton(ex) for ex in exs]
        model = trainer.model
        with torch.no_grad():
            seqs = model.generate(
                input_ids=torch.tensor([[pad] * (width - len(e)) + e for e in encoded]),
                attention_mask=torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded]),
                logits_processor=LogitsProcessorList([TaggingLogitsProcessor(automata, width)]),
                max_new_tokens=max(a.max_tokens() for a in automata), do_sample=True, temperature=temperature,
                top_k=0, top_p=1.0,
                eos_token_id=eot, pad_token_id=pad, use_cache=True)
        completions, masks = [], []
        for row, ex in enumerate(exs):
            new = seqs[row, width:].tolist()
            new = new[: new.index(eot) + 1] if eot in new else new
            replay, mask = automaton(ex), []
            for token in new:
                mask.append(int(len(replay.allowed()) > 1))
                replay.advance(token)
            completions.append(new)
            masks.append(mask)
        return {"prompt_ids": encoded, "completion_ids": completions, "logprobs": None, "env_mask": masks}

    return rollout


def _trl_args(cfg: GRPOConfig, out: Path, seed: int, eos_token_id: int) -> Any:
    import torch
    import trl

    return trl.GRPOConfig(
        output_dir=str(out / "_trainer"), max_steps=cfg.steps, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, loss_type=cfg.loss_type,
        multi_objective_aggregation=cfg.multi_objective_aggregation, beta=cfg.beta, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), seed=seed,
        disable_tqdm=True, gradient_checkpointing=False, generation_kwargs={"eos_token_id": eos_token_id},
    )


def train_grpo(target: WeightsTarget, base: str, cfg: GRPOConfig) -> dict[str, Any]:
    """GRPO on ``base`` with the program's rewards; merged weights saved to ``target.weights``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    req, signature = target.req, target.signature
    train = target.training_examples(req.train)[: cfg.limit]
    if not train:
        raise CompileError("grpo needs training examples (--train)")
    examples = {str(ex.id): ex for ex in train}
    dataset = Dataset.from_list([{"prompt": prompt_messages(signature, ex), "example_id": str(ex.id)} for ex in train])
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    mode = output_mode(signature)
    constrained = cfg.constrained and mode in ("tagged", "choice")
    rollout = None
    if constrained and mode == "tagged":
        rollout = tagged_rollouts(signature, train, tokenizer, cfg.temperature)
    elif constrained:
        rollout = choice_rollouts(signature, train, tokenizer, cfg.temperature, model.config.vocab_size)
    if rollout is not None:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    rewards: list[Any] = reward_functions(req.program, signature, examples, constrained)  # TRL's list type is invariant
    trainer = GRPOTrainer(model=model, reward_funcs=rewards,
                          args=_trl_args(cfg, Path(req.out), req.seed, tokenizer.eos_token_id), train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora_config() if cfg.lora else None,
                          rollout_func=rollout)
    trainer.train()
    history = [{"step": h.get("step"), "reward": h.get("reward"),
                **{k: v for k, v in h.items() if k.startswith("rewards/") and k.endswith("/mean")}}
               for h in trainer.state.log_history if "reward" in h]
    save_model(trainer.model, tokenizer, target.weights)
    shutil.rmtree(Path(req.out) / "_trainer", ignore_errors=True)
    return {"settings": {**asdict(cfg), "constrained": constrained}, "reward_history": history}


def compile_grpo(req: CompileRequest) -> Path:
    """``medprog compile PROGRAM --optimizer grpo --base ARTIFACT --train DATA --out ART``."""
    cfg = parse_options(GRPOConfig, req.options, optimizer="grpo")
    base = resolve_base(req.base)
    if base is None:
        raise CompileError("grpo starts from a compiled artifact or model directory: pass --base")
    return run_weights(req, "grpo", cfg.predictor, cfg.threads, lambda target: train_grpo(target, base, cfg))
