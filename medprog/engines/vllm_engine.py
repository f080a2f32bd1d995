"""`vllm:PATH` — vLLM in-process (batch inference, GRPO rollouts), where vLLM is installed.

Each prompt gets its own ``SamplingParams(structured_outputs=StructuredOutputsParams(...))``
(JSON schema without free whitespace, a choice, or the tagging regex); the batch goes
through ``LLM.chat`` with the model's chat template. Every output is validated with
`check_text`; a violation is that completion's error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medprog.engines.base import Completion, Engine, EngineError, Messages, Sampling
from medprog.engines.cache import RequestCache
from medprog.engines.constraints import (
    ChoiceConstraint,
    Constraint,
    ConstraintViolation,
    JsonConstraint,
    TaggedConstraint,
    check_text,
    tagged_regex,
)

INSTALL_HINT = ("vLLM is not installed in this Python. On a CPU machine run `bash scripts/setup_vllm.sh` and use "
                ".vllm-venv/bin/python; with a GPU, `pip install vllm` beside medprog (keeping your torch); "
                "or serve the model and use --lm openai:MODEL@URL.")


class VLLMNotInstalledError(EngineError):
    """``vllm:`` was asked for in a Python without vLLM (the CLI reports it with exit code 2)."""


def _import_vllm():
    try:
        import vllm
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError as e:
        raise VLLMNotInstalledError(f"{INSTALL_HINT} ({e})") from e
    return vllm, StructuredOutputsParams


class VLLMEngine(Engine):
    """Constrained batch generation with an in-process ``vllm.LLM``."""

    name = "vllm"
    thread_safe = False  # one LLM instance: callers serialise, and batch instead

    def __init__(self, path: str | Path, *, cache: RequestCache | None = None, max_batch: int = 256, **llm_kwargs: Any) -> None:
        super().__init__(cache=cache, max_batch=max_batch)
        vllm, self._so_params = _import_vllm()
        self._sampling_cls = vllm.SamplingParams
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            from medprog.engines.local import ModelPathError

            raise ModelPathError(f"{self.path} is not a model directory (no config.json); "
                                 f"point vllm:PATH at a transformers model directory")
        llm_kwargs.setdefault("structured_outputs_config", {"backend": "xgrammar", "disable_any_whitespace": True})
        self.llm = vllm.LLM(model=str(self.path), **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    def identity(self) -> dict[str, Any]:
        weights = sorted(self.path.glob("*.safetensors"))
        stamp = [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights]
        return {"engine": "vllm", "path": str(self.path.resolve()), "weights": stamp}

    def _structured(self, c: Constraint | None):
        if c is None:
            return None
        if isinstance(c, JsonConstraint):
            return self._so_params(json=c.json_schema, disable_any_whitespace=True)
        if isinstance(c, ChoiceConstraint):
            return self._so_params(choice=list(c.choices))
        if isinstance(c, TaggedConstraint):
            return self._so_params(regex=tagged_regex(c))
        raise TypeError(f"unknown constraint {type(c).__name__}")

    def _params(self, c: Constraint | None, sampling: Sampling):
        max_tokens = sampling.max_tokens
        if isinstance(c, TaggedConstraint):
            # the regex forces the copy: leave room for every text token and some tags
            n_text = len(self.tokenizer(c.text, add_special_tokens=False)["input_ids"])
            max_tokens = max(max_tokens, 2 * n_text + 64)
        return self._sampling_cls(
            temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
            max_tokens=min(max_tokens, self.max_model_len), structured_outputs=self._structured(c),
            spaces_between_special_tokens=False,
        )

    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None],
                  sampling: Sampling) -> list[Completion]:
        try:
            params = [self._params(c, sampling) for c in constraints]
            outputs = self.llm.chat(prompts, sampling_params=params, use_tqdm=False)
        except Exception as e:  # one bad request fails the vLLM batch: retry one by one to isolate it
            if len(prompts) == 1:
                return [Completion(error=f"vLLM: {type(e).__name__}: {e}", finish_reason="error")]
            return [self._generate([p], [c], sampling)[0] for p, c in zip(prompts, constraints)]
        results = []
        for out, c in zip(outputs, constraints):
            gen = out.outputs[0]
            finish = gen.finish_reason or "stop"
            completion = Completion(text=gen.text, prompt_tokens=len(out.prompt_token_ids or []),
                                    completion_tokens=len(gen.token_ids), finish_reason=finish)
            if c is not None:
                try:
                    check_text(c, gen.text)
                except ConstraintViolation as err:
                    completion.error = f"constraint not met ({finish}): {err}"
            results.append(completion)
        return results
