"""Local generation with Hugging Face transformers: batched, left-padded, CPU or GPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tsqr_plugins.backends.base import Backend, Completion, cut_at_stop
from tsqr_plugins.backends.truncation import fit_query
from tsqr_plugins.deadline import expired
from tsqr_plugins.errors import BackendTimeout
from tsqr_plugins.lazy import require
from tsqr_plugins.models import check_model_source, model_identity, weights_fingerprint
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import Prompt

logger = logging.getLogger(__name__)


class TransformersBackend(Backend):
    """``AutoModelForCausalLM`` with the model's chat template (the ``transformers`` extra).

    Queries are generated ``batch_size`` at a time, left-padded; a batch that fails fails only its
    own items. Generation stops at the caller's deadline (``Rewriter(timeout=...)``).

    Args:
        model: A local model folder or a Hugging Face hub id (checked in seconds: a hub id must be
            in the local cache or the hub must answer).
        device: A torch device (``"cpu"``, ``"cuda:0"``); ``"auto"``: CUDA when available, else CPU.
        dtype: A torch dtype name (``"float32"``, ``"bfloat16"``); ``"auto"``: bfloat16 on CUDA,
            float32 on CPU.
        batch_size: Queries per ``model.generate`` call.
        trust_remote_code: Run code shipped with the model (tokenizer and model classes).

    Raises:
        MissingDependencyError: torch or transformers is not installed.
        InputError: The model folder does not exist, or the hub id cannot be reached or found.
    """

    NAME = "transformers"
    EXTRA = "transformers"
    REQUIRES = ("torch", "transformers")

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        trust_remote_code: bool = False,
    ) -> None:
        torch = require("torch", self.EXTRA, "the transformers backend")
        transformers = require("transformers", self.EXTRA, "the transformers backend")
        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = device
        self.batch_size = batch_size
        check_model_source(model, "model", "a local model folder (a `tsqr train` checkpoint, say)")
        self.model_id = model_identity(model)
        self.weights = weights_fingerprint(model)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            model, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        ).to(device)
        self.model.eval()
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 32768))

    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        return self.chat([prompt.messages(self.fit(query, prompt, params)) for query in queries], params)

    def fit(self, query: str, prompt: Prompt, params: GenerationParams) -> str:
        """``query``, or its longest head whose prompt leaves ``params.max_tokens`` of the context.

        Args:
            query: The search query.
            prompt: The prompt it goes into.
            params: Sampling parameters (their ``max_tokens`` is the room kept for the answer).
        """
        return fit_query(query, prompt, self.tokenizer, self.context_length, params.max_tokens)

    def chat(self, conversations: Sequence[list[dict[str, str]]], params: GenerationParams) -> list[Completion]:
        results: list[Completion] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = conversations[start : start + self.batch_size]
            if expired():  # the caller has given up on this call: generate nothing more
                results.extend(Completion.failed(BackendTimeout("the time budget was spent")) for _ in batch)
                continue
            try:
                results.extend(Completion(text=text, finish_reason=finish)
                               for text, finish in self._generate_batch(batch, params))
            except Exception as error:  # one failed batch fails its own items only
                logger.warning("transformers generation failed for %d queries: %s", len(batch), error)
                results.extend(Completion.failed(error) for _ in batch)
        return results

    def _generate_batch(self, conversations: Sequence[list[dict[str, str]]],
                        params: GenerationParams) -> list[tuple[str, str]]:
        """Each conversation's completion and finish reason ("length": cut at max_tokens)."""
        torch = self._torch
        texts = [
            self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in conversations
        ]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(**encoded, **self._sampling_kwargs(params),
                                         stopping_criteria=self._stop_at_deadline())
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ended = self._ended(new_tokens)
        answers = []
        for text, done in zip(decoded, ended):
            cut = cut_at_stop(text, params.stop)
            stopped = done or cut != text or new_tokens.shape[1] < params.max_tokens
            answers.append((cut, "stop" if stopped else "length"))
        return answers

    def _ended(self, new_tokens) -> list[bool]:
        """Whether each row produced an end-of-sequence token (the rest of a finished row is padding)."""
        stops = self.model.generation_config.eos_token_id
        stops = {stops} if isinstance(stops, int) else set(stops or ())
        if self.tokenizer.eos_token_id is not None:
            stops.add(self.tokenizer.eos_token_id)
        stop_ids = self._torch.tensor(sorted(stops), device=new_tokens.device, dtype=new_tokens.dtype)
        return self._torch.isin(new_tokens, stop_ids).any(dim=1).tolist()

    def _stop_at_deadline(self):
        """Generation ends once the caller's time budget is spent (its result is dropped anyway)."""
        transformers = require("transformers", "transformers", "the transformers backend")
        torch = self._torch

        class PastDeadline(transformers.StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), expired(), dtype=torch.bool, device=input_ids.device)

        return transformers.StoppingCriteriaList([PastDeadline()])

    def _sampling_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        stop_ids = [self.tokenizer.convert_tokens_to_ids(token) for token in params.stop]
        stop_ids = [i for i in stop_ids if isinstance(i, int) and i != self.tokenizer.unk_token_id]
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "repetition_penalty": params.repetition_penalty,
            "eos_token_id": stop_ids or self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.greedy:
            return {**kwargs, "do_sample": False}
        return {
            **kwargs,
            "do_sample": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or 0,
        }

    def close(self) -> None:
        """Drop the model and free the CUDA cache."""
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
