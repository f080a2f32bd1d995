"""Cross-entropy / DFT over the tokens a decoding constraint allows, not the whole vocabulary.

Under constrained decoding the model only ever chooses among the few tokens the
constraint admits at a step (for the tagging automaton: the next copied token or a tag).
Training on that restricted softmax optimises exactly what greedy constrained decoding
uses, and spends nothing on steps the constraint forces. Only positions with at least two
admissible tokens carry loss. Pure torch; imports nothing of medprog.
"""

from __future__ import annotations

from typing import Literal

import torch


def choice_loss(hidden: torch.Tensor, weight: torch.Tensor, choices: torch.Tensor, targets: torch.Tensor,
                loss_type: Literal["ce", "dft"] = "ce") -> torch.Tensor:
    """Mean loss over N decision points.

    hidden (N, H): the hidden state that predicts each decision; weight (V, H): the LM head;
    choices (N, K): admissible token ids, padded with -1; targets (N,): index into ``choices``
    of the gold token. ``dft`` weights each term by its detached probability, as DFT does.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0 + weight.sum() * 0.0
    valid = choices >= 0
    w = weight[choices.clamp(min=0)]  # (N, K, H)
    logits = torch.einsum("nh,nkh->nk", hidden.float(), w.float())
    logits = logits.masked_fill(~valid, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    if loss_type == "dft":
        return -(logp.detach().exp() * logp).mean()
    return -logp.mean()


def choice_loss_reference(hidden: torch.Tensor, weight: torch.Tensor, choices: torch.Tensor, targets: torch.Tensor,
                          loss_type: Literal["ce", "dft"] = "ce") -> torch.Tensor:
    """Loop-per-row reference for `choice_loss` (tests compare the two)."""
    terms = []
    for h, row, t in zip(hidden, choices, targets):
        ids = row[row >= 0]
        logp = torch.log_softmax(weight[ids].float() @ h.float(), dim=0)[t]
        terms.append(-(logp.detach().exp() * logp) if loss_type == "dft" else -logp)
    return torch.stack(terms).mean() if terms else hidden.sum() * 0.0
