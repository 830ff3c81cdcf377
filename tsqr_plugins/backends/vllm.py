"""In-process vLLM: the whole batch goes to one ``LLM.chat`` call (continuous batching does the rest)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tsqr_plugins import deadline
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.models import check_model_source, model_identity, weights_fingerprint
from tsqr_plugins.backends.truncation import fit_query
from tsqr_plugins.errors import BackendTimeout
from tsqr_plugins.lazy import require
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import Prompt


class VLLMBackend(Backend):
    """In-process ``vllm.LLM`` (the ``vllm`` extra): each batch is one ``LLM.chat`` call.

    Defaults are the released evaluation's engine settings (``max_model_len=16000``,
    ``gpu_memory_utilization=0.6``), with prefix caching on: every prompt shares the instruction
    prefix. Queries whose prompt would not leave ``max_tokens`` of the context are cut.

    Args:
        model: A local model folder or a Hugging Face hub id (checked at once).
        dtype: vLLM's ``dtype``; ``"auto"``: vLLM's choice from the checkpoint's config
            (bfloat16 for a bfloat16 checkpoint such as Qwen2.5's).
        max_model_len: Context length in tokens (prompt and completion).
        gpu_memory_utilization: Fraction of GPU memory vLLM may take (0-1).
        tensor_parallel_size: GPUs to shard the model over.
        enable_prefix_caching: Reuse the KV cache of the shared instruction prefix.
        trust_remote_code: Run code shipped with the model.
        **engine_kwargs: Any other ``vllm.LLM`` (or ``AsyncEngineArgs``) keyword.

    Raises:
        MissingDependencyError: vllm is not installed.
        InputError: The model folder does not exist, or the hub id cannot be reached or found.
    """

    NAME = "vllm"
    EXTRA = "vllm"
    REQUIRES = ("vllm",)

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        max_model_len: int = 16000,
        gpu_memory_utilization: float = 0.6,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        trust_remote_code: bool = False,
        **engine_kwargs: Any,
    ) -> None:
        vllm = require("vllm", self.EXTRA, "the vllm backend")
        self._vllm = vllm
        check_model_source(model, "model", "a local model folder (a `tsqr train` checkpoint, say)")
        self.model_id = model_identity(model)
        self.weights = weights_fingerprint(model)
        self.context_length = max_model_len
        self._start_engine(vllm, dict(
            model=model, dtype=dtype, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, enable_prefix_caching=enable_prefix_caching,
            trust_remote_code=trust_remote_code, **engine_kwargs,
        ))

    def _start_engine(self, vllm: Any, settings: dict[str, Any]) -> None:
        self.llm = vllm.LLM(**settings)
        self.tokenizer = self.llm.get_tokenizer()

    def sampling_params(self, params: GenerationParams) -> Any:
        """``params`` as ``vllm.SamplingParams``; the stop strings also as token ids.

        Args:
            params: How to sample.
        """
        # Qwen's stop tokens are special tokens: stop on their ids, as the released code does.
        stop_ids = [self.tokenizer.convert_tokens_to_ids(token) for token in params.stop]
        stop_ids = [i for i in stop_ids if isinstance(i, int) and i != self.tokenizer.unk_token_id]
        return self._vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k is not None else -1,
            repetition_penalty=params.repetition_penalty,
            max_tokens=params.max_tokens,
            stop=list(params.stop),
            stop_token_ids=stop_ids,
            seed=params.seed,
        )

    def _conversations(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[list[dict]]:
        return [prompt.messages(fit_query(query, prompt, self.tokenizer, self.context_length, params.max_tokens))
                for query in queries]

    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        return self.chat(self._conversations(queries, prompt, params), params)

    def generate_samples(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams,
                         n: int) -> list[list[Completion]]:
        """``n`` completions per query, all in one engine call (``SamplingParams(n=...)``).

        Args:
            queries: The search queries, each put into ``prompt``.
            prompt: The prompt that turns a query into chat messages.
            params: How to sample.
            n: Completions per query, >= 1.
        """
        sampling = self.sampling_params(params)
        sampling.n = n
        return self._sampled(self._conversations(queries, prompt, params), sampling, n)

    def chat(self, conversations: Sequence[list[dict[str, str]]], params: GenerationParams) -> list[Completion]:
        return [samples[0] for samples in self._sampled(conversations, self.sampling_params(params), 1)]

    def _sampled(self, conversations: Sequence[list[dict[str, str]]], sampling: Any, n: int) -> list[list[Completion]]:
        """The ``n`` completions of each conversation, from one ``LLM.chat`` call."""
        outputs = self.llm.chat(list(conversations), sampling_params=sampling, use_tqdm=False)
        return [[Completion(text=sample.text, finish_reason=sample.finish_reason) for sample in output.outputs]
                for output in outputs]

    def close(self) -> None:
        """Drop the engine."""
        self.llm = None


class AsyncVLLMBackend(VLLMBackend):
    """vLLM's async engine (``AsyncLLMEngine``) on its own event loop in a background thread.

    ``generate`` may be called from several threads at once (the service keeps several batches in
    flight): every query becomes its own engine request, so concurrent batches are interleaved by
    vLLM's continuous batching instead of waiting for each other. It takes :class:`VLLMBackend`'s
    arguments, with the same defaults and sampling; the engine gets ``STARTUP_TIMEOUT`` seconds to
    load the model.
    """

    STARTUP_TIMEOUT = 900.0  # seconds for the engine to load the model

    def _start_engine(self, vllm: Any, settings: dict[str, Any]) -> None:
        import asyncio
        import itertools
        import threading

        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tsqr-vllm-async", daemon=True)
        self._thread.start()
        args = vllm.AsyncEngineArgs(**settings)

        async def start():
            return vllm.AsyncLLMEngine.from_engine_args(args)

        self.engine = asyncio.run_coroutine_threadsafe(start(), self._loop).result(self.STARTUP_TIMEOUT)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(settings["model"],
                                                       trust_remote_code=settings["trust_remote_code"])

    def _sampled(self, conversations: Sequence[list[dict[str, str]]], sampling: Any, n: int) -> list[list[Completion]]:
        """One engine request per conversation, its ``n`` outputs each, within the caller's deadline
        (concurrent callers' requests interleave in the engine)."""
        import asyncio

        texts = [self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                 for messages in conversations]

        async def one(text: str) -> list[Completion]:
            # with n > 1 each streamed output may hold only the samples that moved (vllm/v1/engine/
            # parallel_sampling.py, ParentRequest.get_outputs, vLLM 0.31): keep each index's latest
            latest: dict[int, Any] = {}
            async for output in self.engine.generate({"prompt": text}, sampling, f"tsqr-{next(self._ids)}"):
                latest.update((out.index, out) for out in output.outputs)
            return [Completion(text=latest[i].text, finish_reason=latest[i].finish_reason) if i in latest
                    else Completion(text="") for i in range(n)]

        left = deadline.remaining()

        async def batch() -> list[list[Completion]]:
            # past the caller's time budget the requests are cancelled, which aborts them in vLLM
            return list(await asyncio.wait_for(asyncio.gather(*(one(text) for text in texts)), left))

        try:
            return asyncio.run_coroutine_threadsafe(batch(), self._loop).result()
        except asyncio.TimeoutError:
            return [[Completion.failed(BackendTimeout("the time budget was spent"))] * n for _ in texts]

    def close(self) -> None:
        """Shut the engine down and stop its event loop."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
