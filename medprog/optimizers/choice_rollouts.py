"""GRPO rollouts for a lone choice output, sampled under the choice constraint as at inference.

A predictor whose only output is a ``Literal`` (a multiple-choice letter) is decoded at inference
under a choice constraint over the example's own options (`training_data.call_signature`, the
same narrowing as `narrowed_call`). Free rollouts would mostly be invalid text; here each
completion is sampled from the policy restricted to those options through the engine's own
llguidance choice grammar, so it is one of the allowed choices followed by the end-of-turn
token, and the loss covers only the tokens the constraint left open (``env_mask``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args

import dspy

from medprog.engines.grammar_processor import GrammarLogitsProcessor, choice_grammar, ll_tokenizer
from medprog.engines.local import end_of_turn_id, render_prompt
from medprog.optimizers.training_data import call_signature, prompt_messages


def example_choices(signature: Any, example: dspy.Example) -> tuple[str, ...]:
    """The choices the call on ``example`` may answer (its lone ``Literal`` output, narrowed)."""
    (_, field), = call_signature(signature, example).output_fields.items()
    return tuple(str(a) for a in get_args(field.annotation))


def open_positions(ll_tok: Any, grammar: str, completion: list[int]) -> list[int]:
    """Per completion token: 1 where the grammar admitted more than one token at that step, else 0."""
    import llguidance

    matcher = llguidance.LLMatcher(ll_tok, grammar, log_level=0)
    mask = []
    for token in completion:
        admitted = int.from_bytes(matcher.compute_bitmask(), "little").bit_count()
        mask.append(int(admitted > 1))
        matcher.consume_token(token)
    return mask


def choice_rollouts(signature: Any, examples: list[dspy.Example], tokenizer: Any, temperature: float,
                    n_vocab: int) -> Callable:
    """A TRL ``rollout_func`` sampling each completion under its example's choice constraint.

    Returns per rollout the prompt ids (the inference prompt, rendered by `render_prompt`), the
    completion ids (the choice's tokens and the end-of-turn token) and an ``env_mask`` that is 1
    on the tokens the constraint left to the model (the choice), 0 on forced ones (the end).
    """
    import torch
    from transformers import LogitsProcessorList

    by_prompt = {json.dumps(prompt_messages(signature, ex)): ex for ex in examples}
    eot, pad = end_of_turn_id(tokenizer), tokenizer.pad_token_id
    ll_tok = ll_tokenizer(tokenizer, n_vocab)

    def rollout(prompts: list, trainer: Any) -> dict[str, Any]:
        exs = [by_prompt[json.dumps(p)] for p in prompts]
        choices = [example_choices(signature, ex) for ex in exs]
        grammars = [choice_grammar(c) for c in choices]
        encoded = [render_prompt(tokenizer, p) for p in prompts]
        width = max(map(len, encoded))
        with torch.no_grad():
            seqs = trainer.model.generate(
                input_ids=torch.tensor([[pad] * (width - len(e)) + e for e in encoded]),
                attention_mask=torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded]),
                logits_processor=LogitsProcessorList([GrammarLogitsProcessor(ll_tok, grammars, width)]),
                max_new_tokens=max(len(x) for c in choices for x in c) + 1, do_sample=True,
                temperature=temperature, top_k=0, top_p=1.0, eos_token_id=eot, pad_token_id=pad, use_cache=True)
        completions, masks = [], []
        for row, grammar in enumerate(grammars):
            new = seqs[row, width:].tolist()
            new = new[: new.index(eot) + 1] if eot in new else new
            completions.append(new)
            masks.append(open_positions(ll_tok, grammar, new))
        return {"prompt_ids": encoded, "completion_ids": completions, "logprobs": None, "env_mask": masks}

    return rollout
