"""The weight optimizers' training losses over one batch (see `medprog.optimizers.batches`).

Two objectives: the fused full-vocabulary DFT / cross-entropy kernel (`medprog.kernels.dft_loss`)
on every completion token, or, for tagging, the loss over the tokens the constraint admits
(`medprog.kernels.choice_loss`) plus a category loss and a copy loss. `LossSchedule` says which
loss type a step uses (cross-entropy first, then DFT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medprog.kernels.fused_linear import LossType


def last_hidden(core: Any, inputs: dict[str, Any]) -> tuple[Any, int]:
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


def synced_hidden(ddp_model: Any, inputs: dict[str, Any]) -> tuple[Any, int]:
    """Last hidden states through the DistributedDataParallel wrapper's own forward, so that its
    backward averages the gradients across processes (a forward that bypasses the wrapper, as
    `last_hidden`'s shared prefix does, would leave each process on its own gradients)."""
    out = ddp_model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                    output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1], 0


def _choice_objective(hidden: Any, head: Any, inputs: dict[str, Any], offset: int, loss_type: LossType,
                      copy_weight: float, category_weight: float) -> Any:
    from medprog.kernels.choice_loss import choice_loss
    from medprog.kernels.dft_loss import fused_linear_dft_loss

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


def training_loss(model: Any, inputs: dict[str, Any], loss_type: LossType, copy_weight: float = 0.0,
                  category_weight: float = 0.0) -> Any:
    """The loss of one batch: over the constraint's choices when the batch has decision points
    (plus ``category_weight`` times the loss over the opening tags alone where a gold span opens,
    plus ``copy_weight`` times the full-vocabulary loss on copied tokens), else the fused
    full-vocabulary kernel on every completion token."""
    from medprog.kernels.dft_loss import fused_linear_dft_loss

    wrapped = hasattr(model, "module") and hasattr(model, "no_sync")  # DistributedDataParallel
    inner = model.module if wrapped else model
    core = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    head = core.get_output_embeddings()
    hidden, offset = synced_hidden(model, inputs) if wrapped else last_hidden(core, inputs)
    if "dp_positions" in inputs:
        return _choice_objective(hidden, head, inputs, offset, loss_type, copy_weight, category_weight)
    labels = inputs["labels"][:, offset + 1:].contiguous()
    return fused_linear_dft_loss(hidden[:, :-1].contiguous(), head.weight, labels, loss_type=loss_type)


class LossSchedule:
    """Which loss type a step uses: cross-entropy until ``switch`` (a fraction of the run), then ``after``.

    ``progress`` maps a step to the fraction of the run done (`TrainingClock.progress`)."""

    def __init__(self, after: str, switch: float = 0.0, progress: Callable[[int], float] | None = None) -> None:
        self.after, self.switch, self.progress = after, switch, progress

    def __call__(self, step: int) -> str:
        if self.switch <= 0 or self.progress is None:
            return self.after
        return "ce" if self.progress(step) < self.switch else self.after
