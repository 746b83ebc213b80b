"""Run settings for one arena session (LangGraph Studio shows them as a form)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mentalarena.agents.models import LOCAL_DTYPES, STRUCTURED_OUTPUT, GenerationSettings
from mentalarena.agents.profiles import CONVERSATIONAL_STYLES, STYLE_ALIASES, canonical_style
from mentalarena.agents.prompts import CRISIS_RESOURCES
from mentalarena.agents.safety import EXEMPLAR_MARGIN
from mentalarena.agents.safety import SCREENS as RISK_SCREENS


@dataclass(kw_only=True)
class Context:
    """Models and budgets for a self-play session. Credentials come from the environment only."""

    model: str = field(
        default="embedded",
        metadata={
            "description": (
                "Model spec for every role unless overridden: 'embedded' (SmolLM2-135M-Instruct), a local "
                "Hugging Face folder, 'openai:<model>', '<provider>:<model>', or a registered name."
            )
        },
    )
    patient_model: str = field(
        default="", metadata={"description": "Model spec for the patient; empty means `model` (self-play)."}
    )
    therapist_model: str = field(
        default="", metadata={"description": "Model spec for the therapist; empty means `model`."}
    )
    decoder_model: str = field(
        default="",
        metadata={
            "description": "Model spec the symptom encoder uses to pick behaviour principles; empty means `model`."
        },
    )
    base_url: str = field(
        default="",
        metadata={
            "description": (
                "Base URL of an OpenAI-compatible endpoint (vLLM, llama.cpp server); empty means "
                "OPENAI_BASE_URL or OpenAI."
            )
        },
    )
    embedding_model: str = field(
        default="minilm",
        metadata={
            "description": (
                "Sentence embeddings for the encoder and decoder: 'minilm' (bundled all-MiniLM-L6-v2) or a "
                "local sentence-transformers folder."
            )
        },
    )
    inquiry_turns: int = field(
        default=3,
        metadata={
            "description": "Questions the therapist asks before the symptom decoder first checks its understanding."
        },
    )
    max_redirections: int = field(
        default=2, metadata={"description": "How many times the decoder may send the dialogue back to the therapist."}
    )
    similarity_threshold: float = field(
        default=0.5, metadata={"description": "Cosine similarity under which an inferred field counts as a deviation."}
    )
    principle_shortlist: int = field(
        default=3,
        metadata={
            "description": "Behaviour-principle groups shortlisted by embedding similarity before the model picks one."
        },
    )
    treatment_tries: int = field(
        default=3, metadata={"description": "Most treatments proposed before the best one is kept."}
    )
    medication_tries: int = field(
        default=3, metadata={"description": "Most medications proposed before the best one is kept."}
    )
    target_score: int = field(
        default=8, metadata={"description": "Patient rating (1-10) at which try-and-reflect stops early."}
    )
    parse_retries: int = field(
        default=2,
        metadata={
            "description": "Extra attempts when a model's answer cannot be parsed; past them the failure is recorded."
        },
    )
    call_retries: int = field(
        default=3,
        metadata={
            "description": (
                "Extra attempts, with exponential backoff, when a model call times out, loses its "
                "connection, is rate-limited or gets a server error."
            )
        },
    )
    retry_backoff_seconds: float = field(
        default=1.0,
        metadata={"description": "First backoff of those retries; it doubles each time (with jitter), up to 30 s."},
    )
    request_timeout: float = field(
        default=120.0, metadata={"description": "Seconds an API model call may take before it counts as timed out."}
    )
    local_dtype: str = field(
        default="auto",
        metadata={
            "description": (
                "Weights dtype of local models (embedded, model folders) when generating: 'auto' (bfloat16 "
                "where the CPU computes it natively, else float32), 'bfloat16' or 'float32'."
            )
        },
    )
    structured_output: str = field(
        default="auto",
        metadata={
            "description": (
                "How machine-read answers (diagnosis, ratings, the decoder's inference, ...) are asked for: "
                "'auto' constrains them to their schema wherever the backend can (grammar-constrained "
                "decoding for local models; the endpoint's response_format dialect, detected once, for "
                "OpenAI-compatible servers); 'json_schema' or 'json_object' names an endpoint's dialect; "
                "'off' asks for free text and parses it leniently."
            )
        },
    )
    temperature: float = field(default=0.7, metadata={"description": "Sampling temperature; 0 means greedy."})
    max_new_tokens: int = field(default=128, metadata={"description": "Token budget of each model turn."})
    seed: int = field(
        default=0, metadata={"description": "Seed for the style choice and for sampling where the backend supports it."}
    )
    style: str = field(
        default="",
        metadata={
            "description": (
                "Force a conversational style (plain, upset, verbose, reserved, tangent, pleasing); empty "
                "picks one of the profile's."
            )
        },
    )
    risk_screen: str = field(
        default="exemplars",
        metadata={
            "description": (
                "Risk screening: 'exemplars' (phrases, then similarity to risk and safe exemplars; "
                "precision first) or 'classifier' (the trained classifier, its threshold chosen for recall; "
                "flags far more ordinary speech). See docs/safety.md."
            )
        },
    )
    risk_threshold: float | None = field(
        default=None,
        metadata={
            "type": float,
            "description": (
                "Risk screening: the score at which a turn counts as a risk. Empty: the screen's own "
                "(exemplars: similarity 0.6; classifier: the probability chosen on validation data for "
                "recall)."
            ),
        },
    )
    risk_margin: float = field(
        default=EXEMPLAR_MARGIN,
        metadata={
            "description": (
                "Risk screening, exemplars: how much closer to a risk exemplar than to any safe exemplar a "
                "turn must be."
            )
        },
    )
    risk_classifier: str = field(
        default="",
        metadata={
            "description": (
                "Risk screening, classifier: a folder with a retrained classifier (python -m "
                "mentalarena.training.risk_classifier); empty means the shipped one."
            )
        },
    )
    risk_guard_model: str = field(
        default="",
        metadata={
            "description": (
                "Risk screening: a model spec asked for a second opinion on every screened turn (e.g. Llama "
                "Guard served by vLLM); it can add a flag, never remove one. Empty: off."
            )
        },
    )
    crisis_locale: str = field(
        default="international",
        metadata={
            "description": "Crisis resources shown to a person at risk: international, us, uk, ie, au, ca or in."
        },
    )
    human_role: str = field(
        default="",
        metadata={
            "description": (
                "Let a person play 'patient' or 'therapist': the graph pauses at each of that role's turns "
                "and resumes with the person's text. Empty: models play both."
            )
        },
    )
    review_feedback: bool = field(
        default=False,
        metadata={
            "description": (
                "Pause before the decoder's feedback reaches the therapist, so a person can approve it "
                "(resume with it unchanged), edit it, or drop it (resume with '')."
            )
        },
    )

    def __post_init__(self) -> None:
        """Rejects out-of-range or unknown settings, and keeps a long style name as its short one."""
        bounds = {
            "inquiry_turns": (1, 50),
            "max_redirections": (0, 20),
            "principle_shortlist": (1, 20),
            "treatment_tries": (1, 20),
            "medication_tries": (1, 20),
            "target_score": (1, 10),
            "parse_retries": (0, 10),
            "call_retries": (0, 20),
            "max_new_tokens": (1, 32768),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"Context.{name}: {value!r} is not a whole number from {low} to {high}")
        if not 0.0 <= self.similarity_threshold <= 1.0:
            raise ValueError(f"Context.similarity_threshold: {self.similarity_threshold!r} is not between 0 and 1")
        if self.risk_screen not in RISK_SCREENS:
            raise ValueError(f"Context.risk_screen: {self.risk_screen!r} is not one of {', '.join(RISK_SCREENS)}")
        if self.risk_threshold is not None and not 0.0 < self.risk_threshold < 1.0:
            raise ValueError(f"Context.risk_threshold: {self.risk_threshold!r} is not between 0 and 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"Context.temperature: {self.temperature!r} is not between 0 and 2")
        if self.human_role not in ("", "patient", "therapist"):
            raise ValueError(f"Context.human_role: {self.human_role!r} is not '', 'patient' or 'therapist'")
        if self.crisis_locale not in CRISIS_RESOURCES:
            raise ValueError(
                f"Context.crisis_locale: {self.crisis_locale!r} is not one of {', '.join(CRISIS_RESOURCES)}"
            )
        if self.structured_output not in STRUCTURED_OUTPUT:
            raise ValueError(
                f"Context.structured_output: {self.structured_output!r} is not one of {', '.join(STRUCTURED_OUTPUT)}"
            )
        if self.local_dtype not in LOCAL_DTYPES:
            raise ValueError(f"Context.local_dtype: {self.local_dtype!r} is not one of {', '.join(LOCAL_DTYPES)}")
        if not self.model.strip():
            raise ValueError("Context.model: must name a model spec")
        if self.style:
            # Long style names (hostile, guarded, ...) are accepted as in profiles, and kept as the short one.
            style = canonical_style(self.style)
            if style not in CONVERSATIONAL_STYLES:
                raise ValueError(
                    f"Context.style: {self.style!r} is not one of {', '.join(CONVERSATIONAL_STYLES)} (or "
                    f"{', '.join(STYLE_ALIASES)})"
                )
            self.style = style

    def model_for(self, role: str) -> str:
        """The model spec a role plays with: its own if set, else `model`."""
        return getattr(self, f"{role}_model") or self.model

    def generation(self) -> GenerationSettings:
        """The sampling, endpoint and local-model settings every model call of the session uses."""
        return GenerationSettings(
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            base_url=self.base_url or None,
            timeout=self.request_timeout,
            local_dtype=self.local_dtype,
            structured_output=self.structured_output,
        )

    def as_dict(self) -> dict:
        """Every setting, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
