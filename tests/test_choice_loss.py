"""The constraint-restricted loss against its loop reference, and the decision points it trains on."""

import pytest
import torch

from medprog.kernels.choice_loss import choice_loss, choice_loss_reference


@pytest.mark.parametrize("loss_type", ["ce", "dft"])
def test_choice_loss_matches_reference_with_gradients(loss_type):
    torch.manual_seed(0)
    hidden = torch.randn(7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    choices = torch.tensor([[3, 9, -1], [1, 2, 4], [5, 6, -1], [7, 8, 10], [11, 12, -1], [0, 49, 13], [20, 21, -1]])
    targets = torch.tensor([0, 2, 1, 0, 1, 1, 0])
    a = choice_loss(hidden, weight, choices, targets, loss_type)
    ga = torch.autograd.grad(a, (hidden, weight))
    b = choice_loss_reference(hidden, weight, choices, targets, loss_type)
    gb = torch.autograd.grad(b, (hidden, weight))
    assert torch.allclose(a, b, atol=1e-6)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-6)
    assert weight.grad is None and ga[1][30].abs().sum() == 0  # tokens never admissible get no gradient


def test_decision_points_replay_the_decoding_automaton(tiny_engine):
    import dspy

    from medprog.optimizers.training_data import decision_points, tokenize_example
    from medprog.signatures.tagging import TagDecisions

    note = "Pt was started on aspirin 81 mg daily. Will follow up."
    ex = dspy.Example(note=note, tagged="Pt was <drug_decision>started on aspirin 81 mg daily</drug_decision>. "
                                         "<defer_decision>Will follow up</defer_decision>.").with_inputs("note")
    row = tokenize_example(TagDecisions, ex, tiny_engine.tokenizer)
    dp = decision_points(TagDecisions, ex, tiny_engine.tokenizer, row)
    tok = tiny_engine.tokenizer
    open_id = tok.convert_tokens_to_ids("<drug_decision>")
    picked = [c[t] for c, t in zip(dp["dp_choices"], dp["dp_targets"])]
    assert open_id in picked and tok.convert_tokens_to_ids("</defer_decision>") in picked
    for pos, c, t in zip(dp["dp_positions"], dp["dp_choices"], dp["dp_targets"]):
        assert row["input_ids"][pos + 1] == c[t] and len(c) >= 2
    bad = ex.copy(tagged="Pt was started on aspirin.")  # not a tagging of this note
    with pytest.raises(Exception):
        decision_points(TagDecisions, bad, tok, tokenize_example(TagDecisions, bad, tok))
