"""Small causal LMs built locally: a byte-level BPE trained on a corpus plus a transformers config.

Nothing is downloaded. Used by the tests (random or briefly trained models) and by the
`dft` optimizer's embedded default model, which is trained from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

EOS = "<|im_end|>"
PAD = "<|endoftext|>"
BOS = "<|im_start|>"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class SmallModelConfig(BaseModel):
    """Shape of a from-scratch model (Qwen2 architecture, tied embeddings)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 2048


def tag_tokens(tags: Iterable[str]) -> list[str]:
    return [s for t in tags for s in (f"<{t}>", f"</{t}>")]


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 2048, tags: Iterable[str] = ()):
    """A byte-level BPE (GPT-2 style pre-tokenizer, digits split one by one) with ChatML specials and
    tags as added tokens.

    Single digits, as in Llama's and Qwen's tokenizers: a number is copied digit by digit, so a
    model that has not found its place in the source still has only ten candidates for the next
    token (with merged numbers it had hundreds, and its uncertainty let a tag outscore the copy).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=BOS)
    extra = tag_tokens(tags)
    if extra:
        fast.add_tokens(extra)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_model(tokenizer, cfg: SmallModelConfig | None = None, seed: int = 0):
    """A randomly initialised Qwen2 causal LM sized for ``tokenizer``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = cfg or SmallModelConfig()
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, use_cache=True,
    )
    return Qwen2ForCausalLM(config)


def build_small_model(path: Path | str, corpus: Iterable[str], *, tags: Iterable[str] = (),
                      cfg: SmallModelConfig | None = None, seed: int = 0) -> Path:
    """Train a tokenizer on ``corpus``, build a random model, save both to ``path``."""
    cfg = cfg or SmallModelConfig()
    path = Path(path)
    tokenizer = build_tokenizer(corpus, cfg.vocab_size, tags)
    model = build_model(tokenizer, cfg, seed)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path, safe_serialization=True)
    return path


TEST_CORPUS = [
    "Patient was started on aspirin 81 mg daily for chest pain.",
    "Will follow up with cardiology in two weeks; CT scan of the chest showed no acute process.",
    '{"answer": "B", "reasoning": "the findings suggest pneumonia", "confidence": 0.7}',
    "Discharge instructions: avoid heavy lifting, call your doctor if fever returns.",
    "A 45-year-old woman presents with fever, cough and shortness of breath. Options: A B C D E.",
    "true false null [ ] { } , : 0 1 2 3 4 5 6 7 8 9 yes no maybe",
]
