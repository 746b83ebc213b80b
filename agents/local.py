"""Local Hugging Face chat models with dynamic batching.

Self-play spends nearly all its time generating, and a CPU generates several sequences in one
forward pass almost as fast as one. So every session that uses a local model submits its prompt
to one shared ``LocalGenerator``, whose worker thread gathers the requests that arrive within a
short, bounded wait and generates them as one left-padded batch.

Written here rather than taken from langchain-huggingface: its ``ChatHuggingFace`` over a local
pipeline has no async and generates one request at a time, so concurrent sessions could not
share a forward pass.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from mentalarena.agents.models import GenerationSettings, load_local_model

ROLES = {"system": "system", "human": "user", "ai": "assistant"}


@dataclass
class _Request:
    prompt: str
    settings: GenerationSettings
    future: Future = field(default_factory=Future)


class LocalGenerator:
    """One local model shared by all sessions; concurrent requests are generated as one batch."""

    def __init__(self, path: str, max_batch: int = 16, max_wait_seconds: float = 0.1):
        self.model, self.tokenizer = load_local_model(path)
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self.stats: Counter = Counter()  # requests, batches, generated_tokens
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name=f"local-generator:{path}", daemon=True)
        self._worker.start()

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def submit(self, prompt: str, settings: GenerationSettings) -> Future:
        request = _Request(prompt, settings)
        self._queue.put(request)
        return request.future

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait_seconds
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            groups: dict[GenerationSettings, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.settings, []).append(request)
            for settings, group in groups.items():
                try:
                    texts = self.generate([r.prompt for r in group], settings)
                except Exception as exc:  # every waiting session hears of it; the worker goes on
                    for request in group:
                        request.future.set_exception(exc)
                else:
                    for request, text in zip(group, texts):
                        request.future.set_result(text)

    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[str]:
        """One padded batch through ``model.generate``; returns the new text of each prompt."""
        import torch

        tokenizer = self.tokenizer
        tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = settings.temperature > 0
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                do_sample=sampling,
                temperature=settings.temperature if sampling else None,
                top_p=0.95 if sampling else None,
                # Small local models loop on their own phrases without it.
                repetition_penalty=1.15,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        generated = int((new_tokens != tokenizer.pad_token_id).sum())
        self.stats.update(requests=len(prompts), batches=1, generated_tokens=generated)
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


_generators: dict[str, LocalGenerator] = {}
_generators_lock = threading.Lock()


def local_generator(path: str) -> LocalGenerator:
    """The one generator of a model folder; sessions that start together must not make two."""
    with _generators_lock:
        if path not in _generators:
            _generators[path] = LocalGenerator(path)
        return _generators[path]


class LocalChatModel(BaseChatModel):
    """A chat model over a shared :class:`LocalGenerator`; sync and async calls both batch."""

    path: str
    settings: GenerationSettings

    @property
    def _llm_type(self) -> str:
        return "mentalarena-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"path": self.path, "max_new_tokens": self.settings.max_new_tokens, "temperature": self.settings.temperature}

    def _submit(self, messages: list[BaseMessage]) -> Future:
        generator = local_generator(self.path)
        rendered = generator.render([{"role": ROLES[m.type], "content": m.text} for m in messages])
        return generator.submit(rendered, self.settings)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._submit(messages).result()))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = await asyncio.wrap_future(self._submit(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])
