"""Training rows and batches for the weight optimizers.

A row is one demonstration rendered as the engine renders it (`training_data.tokenize_example`),
with the tagging constraint's decision points when training on the choice objective. A batch pads
rows on the right, flattens the decision points into (row, position) indices, and records how
many prompt tokens every row shares (`shared_prefix`), which the loss runs once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy

from medprog.optimizers.training_data import decision_points, tokenize_example
from medprog.optimizers.word_noise import NOISED

Row = dict[str, list]


def training_rows(signature: Any, examples: list[dspy.Example], tokenizer: Any, choice: bool) -> list[Row]:
    """One row per example: ``input_ids`` and ``labels``; with ``choice``, its decision points too
    (a word-noised example without copy labels: `medprog.optimizers.word_noise`)."""
    rows = []
    for ex in examples:
        row = tokenize_example(signature, ex, tokenizer)
        if choice:
            row.update(decision_points(signature, ex, tokenizer, row))
            if ex.get(NOISED):
                row["copy_labels"] = [-100] * len(row["copy_labels"])
        rows.append(row)
    return rows


def trained_on_choices(model_dir: str | None) -> bool:
    """Whether ``model_dir`` was trained by `train_dft` with the choice objective (its training report says)."""
    report = Path(model_dir or "") / "training_report.json"
    return report.is_file() and json.loads(report.read_text()).get("objective") == "choice"


def shared_prefix(rows: list[Row]) -> int:
    """Length of the prompt prefix every row shares (never reaching into a completion)."""
    first = rows[0]["input_ids"]
    n = min(next((i for i, lab in enumerate(r["labels"]) if lab != -100), len(r["labels"])) for r in rows)
    for r in rows[1:]:
        ids = r["input_ids"]
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    return n


def _padded(rows: list[Row], key: str, pad: int, width: int) -> list[list[int]]:
    return [r[key] + [pad] * (width - len(r[key])) for r in rows]


def _decision_tensors(rows: list[Row]) -> dict[str, Any]:
    """Decision points of all rows, flat: row and position indices, choices (-1 padded), targets, openings."""
    import torch

    k = max((len(c) for r in rows for c in r["dp_choices"]), default=1)
    return {
        "dp_rows": torch.tensor([i for i, r in enumerate(rows) for _ in r["dp_positions"]], dtype=torch.long),
        "dp_positions": torch.tensor([p for r in rows for p in r["dp_positions"]], dtype=torch.long),
        "dp_choices": torch.tensor([c + [-1] * (k - len(c)) for r in rows for c in r["dp_choices"]],
                                   dtype=torch.long).reshape(-1, k),
        "dp_targets": torch.tensor([t for r in rows for t in r["dp_targets"]], dtype=torch.long),
        "dp_opens": torch.tensor([o + [0] * (k - len(o)) for r in rows for o in r["dp_opens"]],
                                 dtype=torch.bool).reshape(-1, k),
    }


def collator(pad_id: int) -> Callable[[list[Row]], dict[str, Any]]:
    """A data collator: right-padded tensors, decision points flattened, and the shared prefix length."""
    import torch

    def collate(rows: list[Row]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor(_padded(rows, "input_ids", pad_id, width)),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                            for r in rows]),
            "labels": torch.tensor(_padded(rows, "labels", -100, width)),
        }
        if "copy_labels" in rows[0]:
            batch["copy_labels"] = torch.tensor(_padded(rows, "copy_labels", -100, width))
        if "dp_positions" in rows[0]:
            batch.update(_decision_tensors(rows))
        batch["shared_prefix"] = shared_prefix(rows)
        return batch

    return collate
