"""Training sequences rendered exactly as the engine renders them at inference.

The prompt is the adapter's chat messages through the same chat template (`render_prompt`), for
the signature as the program calls it (a multiple-choice answer narrowed to the example's letters);
the completion is the constrained output in its canonical tokenization — for `TaggedText`,
gold spans re-rendered at the tokenizer's tag positions and each segment tokenized on its
own — followed by the end-of-turn token the engine stops on.
"""

from __future__ import annotations

from typing import Any

import dspy

from medprog.engines.constraints import output_mode, output_text
from medprog.engines.local import end_of_turn_id, render_prompt
from medprog.engines.tagging import parse_tagged, render_tagged
from medprog.engines.tagging_processor import automaton_for, canonical_ids, tokenizer_layout
from medprog.engines.types import is_literal
from medprog.programs.multiagent import with_choices
from medprog.signatures.adapter import format_messages


def target_text(signature: Any, example: dspy.Example, tokenizer) -> str:
    """The gold completion text, with tags placed where ``tokenizer`` can write them."""
    values = dict(example)
    if output_mode(signature) == "tagged":
        (name, field), = signature.output_fields.items()
        text, spans = parse_tagged(str(values[name]), list(field.annotation.tags))
        return render_tagged(text, spans, tokenizer_layout(text, tokenizer))
    return output_text(signature, values)


def completion_ids(signature: Any, example: dspy.Example, tokenizer) -> list[int]:
    text = target_text(signature, example, tokenizer)
    if output_mode(signature) == "tagged":
        ids = canonical_ids(text, tokenizer)
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [end_of_turn_id(tokenizer)]


def call_signature(signature: Any, example: dspy.Example) -> Any:
    """The signature the program calls on ``example``: an ``answer`` field typed by a ``Literal`` is
    narrowed to the example's own option letters when it has an ``options`` dict, as the
    multiple-choice programs do at inference (`narrowed_call`); otherwise ``signature`` itself."""
    field = signature.output_fields.get("answer")
    options = example.inputs().toDict().get("options")
    if field is None or not is_literal(field.annotation) or not isinstance(options, dict) or not options:
        return signature
    return with_choices(signature, "answer", list(options))


def prompt_messages(signature: Any, example: dspy.Example, demos: list | None = None) -> list[dict[str, str]]:
    """The chat messages of the call on ``example``, exactly as the program sends them (`call_signature`)."""
    return format_messages(call_signature(signature, example), demos or [], example.inputs().toDict())


def tokenize_example(signature: Any, example: dspy.Example, tokenizer,
                     demos: list | None = None) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (prompt masked with -100) for one demonstration."""
    prompt = render_prompt(tokenizer, prompt_messages(signature, example, demos))
    completion = completion_ids(signature, example, tokenizer)
    return {"input_ids": prompt + completion, "labels": [-100] * len(prompt) + completion}


def corpus_texts(signature: Any, examples: list[dspy.Example]) -> list[str]:
    """Texts a from-scratch tokenizer is trained on: every prompt message and gold completion."""
    texts: list[str] = []
    for ex in examples:
        texts.extend(m["content"] for m in prompt_messages(signature, ex))
        values = dict(ex)
        if output_mode(signature) == "tagged":
            continue  # the completion repeats the note; its tags are added tokens
        texts.append(output_text(signature, values))
    return texts


def decision_points(signature: Any, example: dspy.Example, tokenizer, row: dict[str, list[int]]) -> dict[str, list]:
    """Where the tagging constraint leaves a choice in this training sequence.

    Replays the decoding automaton over the gold completion: for every step that admits two or
    more tokens, the sequence position whose hidden state predicts it, the admissible ids and
    the index of the gold one, and which of the admissible ids open a tag (``dp_opens``); and
    ``copy_labels``, the labels with every tag token masked (-100): the copied text alone. A gold
    token the automaton would refuse is a bug, not data.
    """
    (name, field), = signature.output_fields.items()
    text = str(example.inputs()[field.annotation.source])
    automaton = automaton_for(text, list(field.annotation.tags), tokenizer, end_of_turn_id(tokenizer))
    start = next(i for i, lab in enumerate(row["labels"]) if lab != -100)
    opens = {seq[0] for seq in automaton.open_ids.values()}
    tag_ids = {t for seq in [*automaton.open_ids.values(), *automaton.close_ids.values()] for t in seq}
    positions, choices, targets, is_open = [], [], [], []
    for i, token in enumerate(row["input_ids"][start:], start):
        allowed = automaton.allowed()
        if token not in allowed:
            raise ValueError(f"example {example.get('id')}: gold token {token} at {i} is outside the constraint")
        if len(allowed) > 1:
            positions.append(i - 1)
            choices.append(allowed)
            targets.append(allowed.index(token))
            is_open.append([int(t in opens) for t in allowed])
        automaton.advance(token)
    copy_labels = [-100 if lab in tag_ids else lab for lab in row["labels"]]
    return {"dp_positions": positions, "dp_choices": choices, "dp_targets": targets, "dp_opens": is_open,
            "copy_labels": copy_labels}
