"""The answers the arena reads by machine, one pydantic model each.

Every other place that needs an answer's shape is generated from these classes: the format
instruction in its prompt (:meth:`Answer.format_instruction`), the JSON schema a backend constrains
decoding with (:meth:`Answer.response_format`), the tolerant parser for backends without
structured output (:meth:`Answer.parse_text`), the scripted model's answers and the tests' labels
(:meth:`Answer.as_text`). Free dialogue turns stay free text.

String fields carry a ``maxLength`` in the JSON schema, scaled to the turn's token budget
(``max_tokens``): constrained decoding then closes the JSON object within about that many tokens,
however a small model would otherwise ramble (left free, SmolLM2 filled every string to its
limit). It bounds generation only: a longer answer from a free-text backend or a person is kept.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from mentalarena.agents.parsing import (
    ParseError,
    parse_choice,
    parse_labelled_fields,
    parse_numbered_items,
    parse_score,
)


class Answer(BaseModel):
    """A machine-read answer: field titles are the labels of its free-text format."""

    model_config = ConfigDict(extra="ignore")

    # Label spellings the free-text parser accepts besides each field's title (lower case).
    label_aliases: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Whether a free-text answer may come without labels (a bare '2', 'maybe 7/10'): then
    # :meth:`from_labelled` reads its fields from the whole answer.
    labels_optional: ClassVar[bool] = False

    @classmethod
    def titles(cls) -> dict[str, str]:
        """field -> its title, or its name in words where it has none."""
        return {name: info.title or name.replace("_", " ").capitalize() for name, info in cls.model_fields.items()}

    @classmethod
    def labels(cls) -> dict[str, tuple[str, ...]]:
        """field -> the label spellings the free-text parser accepts: title, name, aliases."""
        return {
            name: (title.lower(), name.replace("_", " "), *cls.label_aliases.get(name, ()))
            for name, title in cls.titles().items()
        }

    @classmethod
    def format_instruction(cls) -> str:
        """One 'Title: <description>' line per field, in order: the answer's format in every prompt."""
        return "\n".join(f"{title}: <{cls.model_fields[name].description}>" for name, title in cls.titles().items())

    @classmethod
    def json_schema(cls, max_tokens: int | None = None) -> dict[str, Any]:
        """The JSON schema for constrained decoding: every field required, nothing else allowed,
        no titles (the keys say enough). With ``max_tokens``, the strings' ``maxLength`` shrink in
        proportion so that the whole answer fits that many tokens (:meth:`token_budget`), down
        to a floor that keeps each a phrase."""
        schema = cls.model_json_schema()
        _strip_titles(schema)
        schema["required"] = list(schema["properties"])
        schema["additionalProperties"] = False
        strings = [field for field in schema["properties"].values() if "maxLength" in field]
        if max_tokens is not None and strings:
            allowance = max(0, max_tokens - _structure_tokens(schema)) * CHARACTERS_PER_TOKEN
            scale = min(1.0, allowance / sum(field["maxLength"] for field in strings))
            for field in strings:
                field["maxLength"] = max(min(field["maxLength"], SHORTEST_TEXT), int(field["maxLength"] * scale))
                field["minLength"] = min(field.get("minLength", 0), field["maxLength"])
        for field in strings:
            if field.pop("x-name"):
                field["pattern"] = _name_pattern(field.get("minLength", 0), field["maxLength"])
        return schema

    @classmethod
    def response_format(cls, max_tokens: int | None = None) -> dict[str, Any]:
        """The OpenAI ``response_format`` asking for this answer; local and scripted models take it too."""
        # Not 'strict': OpenAI's strict mode refuses maxLength; vLLM and llama.cpp enforce the schema anyway.
        return {"type": "json_schema", "json_schema": {"name": cls.__name__, "schema": cls.json_schema(max_tokens)}}

    @classmethod
    def token_budget(cls, max_tokens: int | None = None) -> int:
        """New tokens enough for the longest answer :meth:`json_schema` admits at ``max_tokens``."""
        schema = cls.json_schema(max_tokens)
        characters = sum(field["maxLength"] for field in schema["properties"].values() if "maxLength" in field)
        return _structure_tokens(schema) + -(-characters // CHARACTERS_PER_TOKEN)

    @classmethod
    def parse_json(cls, text: str) -> Self:
        """The answer from a JSON reply (a constrained one, or a JSON object inside free text)."""
        match = re.search(r"\{.*\}", text, re.S)
        if not match:
            raise ParseError(f"no JSON object in {text[:80]!r}")
        try:  # not strict: llama-cpp-python's grammars let raw newlines into strings
            return cls.model_validate(json.loads(match.group(0), strict=False))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ParseError(f"{cls.__name__}: {_first_error(exc)} in {text[:80]!r}") from exc

    @classmethod
    def parse_text(cls, text: str) -> Self:
        """The answer from free text: a JSON object if there is one, else the labelled format."""
        if "{" in text:
            try:
                return cls.parse_json(text)
            except ParseError:
                if text.lstrip().startswith("{"):
                    raise  # a JSON answer that does not validate
                # else a stray brace in prose: read the labels
        labels = cls.labels()
        try:
            fields = parse_labelled_fields(text, labels)
        except ParseError:
            if not cls.labels_optional:
                raise
            fields = {name: "" for name in labels}
        try:
            return cls.model_validate(cls.from_labelled(fields, text))
        except ValidationError as exc:
            raise ParseError(f"{cls.__name__}: {_first_error(exc)} in {text[:80]!r}") from exc

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """Labelled values -> the model's input; answers with non-text fields read those here."""
        return fields

    def as_text(self) -> str:
        """The answer in its labelled free-text format (what a model without structured output writes)."""
        return "\n".join(f"{title}: {getattr(self, name)}" for name, title in self.titles().items())


# Brackets or a leading symbol: an echoed '<placeholder>', '[insert ...]' or a fragment.
ECHOED_TEMPLATE = re.compile(r"[<>\[\]{}]|^\W")


def text_field(
    description: str, max_length: int, title: str | None = None, min_length: int = 2, name: bool = False
) -> Any:
    """A text field bounded to ``max_length`` characters when generated. A ``name`` (a proposal,
    which becomes a training target) is also held to :data:`ECHOED_TEMPLATE`'s opposite by a
    pattern that carries the length bound itself: llama-cpp-python's grammar drops ``maxLength``
    beside a ``pattern``."""
    return Field(
        description=description,
        title=title,
        min_length=min_length,
        json_schema_extra={"maxLength": max_length, "x-name": name},
    )


def _name_pattern(min_length: int, max_length: int) -> str:
    """Opens with a letter or digit; no brackets, quotes, backslashes or line breaks after it."""
    return rf'^[A-Za-z0-9][^<>\[\]{{}}"\\\n]{{{max(min_length - 1, 0)},{max_length - 1}}}$'


def no_echoed_template(value: str) -> str:
    """A proposal becomes a training target: an echoed placeholder ('<one treatment>') is not one."""
    if ECHOED_TEMPLATE.search(value.strip()):
        raise ValueError(f"{value!r} is a placeholder or a fragment, not a proposal")
    return value


# --- the diagnosis vocabulary ------------------------------------------------------------------


@functools.cache
def diagnosis_vocabulary() -> tuple[dict, ...]:
    """DSM-5-TR / ICD-11 names (``agents/data/diagnoses.json``): name, codes, aliases."""
    resource = importlib.resources.files("mentalarena.agents") / "data" / "diagnoses.json"
    return tuple(json.loads(resource.read_text(encoding="utf-8")))


@functools.cache
def _names_by_spelling() -> dict[str, str]:
    spellings = {}
    for entry in diagnosis_vocabulary():
        for spelling in (entry["name"], *entry["aliases"]):
            spellings[_normalized(spelling)] = entry["name"]
    return spellings


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower().replace("post-traumatic", "posttraumatic")))


def vocabulary_name(text: str) -> str | None:
    """The vocabulary name a diagnosis or a profile's ``presentation`` is spelled as, or None.

    Exact name or alias first; else the longest name or alias the text contains as whole words
    ('1. **Panic disorder** without agoraphobia' is Panic disorder)."""
    spellings = _names_by_spelling()
    key = _normalized(text)
    if key in spellings:
        return spellings[key]
    inside = [spelling for spelling in spellings if re.search(rf"(?<!\w){re.escape(spelling)}(?!\w)", key)]
    return spellings[max(inside, key=len)] if inside else None


if TYPE_CHECKING:  # the names come from the vocabulary file; to a type checker they are strings
    DiagnosisName = str
else:
    DiagnosisName = Literal[tuple(entry["name"] for entry in diagnosis_vocabulary())]


# --- the answers ---------------------------------------------------------------------------------


class PrincipleChoice(Answer):
    """The encoder's pick among the shortlisted behaviour-principle groups."""

    choice: int = Field(description="the number of the group that fits best", title="Choice", ge=1, le=9)
    labels_optional = True
    options: ClassVar[list[str]] = []

    @classmethod
    def among(cls, options: list[str]) -> type[PrincipleChoice]:
        """The schema for choosing among ``options`` (numbered from 1)."""
        model = create_model(
            cls.__name__,
            __base__=cls,
            choice=(
                int,
                Field(description="the number of the group that fits best", title="Choice", ge=1, le=len(options)),
            ),
        )
        model.options = list(options)
        return model

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """Reads the choice as the option the answer picks, by number or by naming it."""
        return {"choice": parse_choice(fields["choice"] or text, cls.options) + 1}


class DecoderInference(Answer):
    """What the therapist has inferred about the patient; the symptom decoder compares each field
    with the encoded one (same keys)."""

    intermediate_belief: str = text_field(
        "the rules and assumptions the patient lives by", 240, title="Intermediate beliefs"
    )
    intermediate_belief_depression: str = text_field(
        "the 'if ..., then ...' assumptions they hold when low", 200, title="Beliefs during depression"
    )
    coping_strategies: str = text_field("how they cope", 240, title="Coping strategies")
    situation: str = text_field(
        "the recent situation, what they thought, felt and did",
        400,
        title="Situation, thoughts, emotions and behaviour",
    )
    behaviour_principles: str = text_field(
        "how they tend to act and respond in this conversation", 300, title="Behaviour principles"
    )

    # The decoder's feedback on a field that deviates: (its name there, what to ask about next).
    feedback_wording: ClassVar[dict[str, tuple[str, str]]] = {
        "intermediate_belief": ("intermediate beliefs", "the rules, attitudes and assumptions they live by"),
        "intermediate_belief_depression": (
            "beliefs during depression",
            "the 'if ..., then ...' assumptions they hold when they feel low",
        ),
        "coping_strategies": ("coping strategies", "how they usually cope when things get hard"),
        "situation": (
            "thoughts, emotions and behaviour in the situation",
            "the recent situation that upset them: what went through their mind, how they felt and what they did",
        ),
        "behaviour_principles": (
            "behaviour principles",
            "how they tend to act and respond in conversations like this, and what they hold back",
        ),
    }

    # Only whole titles and their spelling variants: a bare 'Behaviour:' or 'Thoughts:' line is
    # part of the situation the model is describing, not a field of its own.
    label_aliases = {
        "intermediate_belief": ("intermediate belief",),
        "intermediate_belief_depression": ("belief during depression", "intermediate beliefs during depression"),
        "coping_strategies": ("coping strategy",),
        "situation": ("situation, thoughts, emotions and behavior", "situation"),
        "behaviour_principles": ("behavior principles",),
    }

    @classmethod
    def partial(cls, text: str) -> dict[str, str]:
        """The fields a free-text inference does state, '' for the rest (unparsed fields count as
        deviations rather than losing the round)."""
        return parse_labelled_fields(text, cls.labels())


class Diagnosis(Answer):
    """A symptom summary and the two most likely diagnoses from the vocabulary, most likely first."""

    summary: str = text_field("two or three sentences on the patient's symptoms", 400, title="Summary")
    first: DiagnosisName = Field(
        description="the most likely diagnosis, one name from the list", title="First diagnosis"
    )
    second: DiagnosisName = Field(
        description="the next most likely diagnosis, a different name from the list", title="Second diagnosis"
    )
    note: str = text_field("anything the names leave out, or 'none'", 80, title="Note", min_length=0)

    label_aliases = {
        "summary": ("symptom summary", "symptoms"),
        "first": ("diagnosis 1", "first"),
        "second": ("diagnosis 2", "second"),
    }
    labels_optional = True

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """Also reads the diagnoses as a numbered list ('1. Panic disorder') and the summary as
        what comes before it."""
        fields = dict(fields)
        if not (fields["first"] and fields["second"]):
            listed = parse_numbered_items(text, 2)
            fields.update(first=fields["first"] or listed[0], second=fields["second"] or listed[1])
            before_list = re.split(r"\n\s*(?:\(?1[.):]|[-*•])\s", text.strip(), maxsplit=1)[0]
            fields["summary"] = (
                parse_labelled_fields(before_list, {"summary": cls.labels()["summary"]})["summary"]
                if fields["summary"]
                else before_list.strip()
            )
        return fields

    @field_validator("first", "second", mode="before")
    @classmethod
    def _in_vocabulary(cls, value: Any) -> Any:
        """A free-text name or alias is read as its vocabulary name ('PTSD', 'Major depression')."""
        return vocabulary_name(value) or value if isinstance(value, str) else value

    @model_validator(mode="after")
    def _two_different(self) -> Diagnosis:
        if self.first == self.second:
            raise ValueError(f"the two diagnoses are the same ({self.first})")
        return self

    @property
    def candidates(self) -> list[str]:
        """The two diagnoses, most likely first."""
        return [self.first, self.second]


class DiagnosisReview(Answer):
    """The patient's pick between the two candidate diagnoses, and why."""

    choice: Literal[1, 2] = Field(description="1 or 2: the diagnosis that fits your experience better", title="Choice")
    reason: str = text_field("one sentence why, from your own experience", 240, title="Why")

    label_aliases = {"reason": ("reason", "because")}
    labels_optional = True
    candidates: ClassVar[list[str]] = []

    @classmethod
    def between(cls, candidates: list[str]) -> type[DiagnosisReview]:
        """The schema for choosing between ``candidates`` (numbered from 1)."""
        model = create_model(cls.__name__, __base__=cls)
        model.candidates = list(candidates)
        return model

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """Reads the choice as the candidate the answer picks, and the reason as the rest where unlabelled."""
        reason = fields["reason"] or re.sub(r"^\W*(?:choice\W*)?[12]\b\W*", "", text.strip(), flags=re.I)
        return {"choice": parse_choice(fields["choice"] or text, cls.candidates) + 1, "reason": reason or text.strip()}


class TreatmentProposal(Answer):
    """One treatment, with why it fits this patient."""

    treatment: str = text_field("one treatment, in a few words", 120, title="Treatment", min_length=3, name=True)
    explanation: str = text_field("why it fits this patient, in one or two sentences", 320, title="Explanation")

    label_aliases = {"explanation": ("reason", "why")}
    _proposal_check = field_validator("treatment")(no_echoed_template)

    @property
    def proposal(self) -> str:
        """The treatment proposed."""
        return self.treatment


class MedicationProposal(Answer):
    """One medication (or 'None' where none is appropriate), with why."""

    medication: str = text_field(
        "one medication, or None if no medication is appropriate", 120, title="Medication", name=True
    )
    explanation: str = text_field("why it fits this patient, in one or two sentences", 320, title="Explanation")

    label_aliases = {"explanation": ("reason", "why")}
    _proposal_check = field_validator("medication")(no_echoed_template)

    @property
    def proposal(self) -> str:
        """The medication proposed (or 'None')."""
        return self.medication


PROPOSALS: dict[str, type[TreatmentProposal] | type[MedicationProposal]] = {
    "treatment": TreatmentProposal,
    "medication": MedicationProposal,
}


class Rating(Answer):
    """How the patient imagines feeling after following a proposal, and the rating of it."""

    reaction: str = text_field(
        "how you would feel after a few weeks of it, in one or two sentences", 320, title="Reaction"
    )
    score: int = Field(
        description="how you would feel, from 1 (much worse) to 10 (much better)", title="Score", ge=1, le=10
    )

    labels_optional = True

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """Reads the score from a rating anywhere in the answer, and the reaction as what comes before it."""
        reaction = fields["reaction"] or re.split(r"\n?\s*\**score\b", text.strip(), maxsplit=1, flags=re.I)[0].strip()
        return {"reaction": reaction or text.strip(), "score": parse_score(fields["score"] or text)}


class MetricScore(Answer):
    """A judge's score of one counselling metric."""

    reason: str = text_field("one sentence on how well the response meets the rubric", 240, title="Reason")
    score: int = Field(description="the score from 1 (poor) to 10 (excellent)", title="Score", ge=1, le=10)

    labels_optional = True

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """Reads the score from a rating anywhere in the answer; without a reason label the reason is all of it."""
        return {"reason": fields["reason"] or text.strip(), "score": parse_score(fields["score"] or text)}


class PairwiseVerdict(Answer):
    """A judge's verdict between two responses."""

    reason: str = text_field("one sentence comparing the two responses", 240, title="Reason")
    better: Literal["1", "2", "tie"] = Field(description="1 or 2 for the better response, or tie", title="Better")

    labels_optional = True

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """Reads the verdict from how the answer words it (:func:`parse_verdict`); the reason defaults to all of it."""
        return {"reason": fields["reason"] or text.strip(), "better": parse_verdict(fields["better"] or text)}


RISK_CATEGORIES = ("suicidal_ideation", "self_harm", "harm_to_others", "abuse", "medical_emergency")


class RiskVerdict(Answer):
    """A guard model's second opinion on whether a message shows risk (agents/safety.py)."""

    category: Literal[("none", *RISK_CATEGORIES)] = Field(  # type: ignore[valid-type]
        description=f"none, or the risk the message shows: {', '.join(RISK_CATEGORIES[:-1])} or {RISK_CATEGORIES[-1]}",
        title="Category",
    )
    reason: str = text_field("one sentence on why", 240, title="Reason")

    labels_optional = True

    @property
    def at_risk(self) -> bool:
        """Whether the guard named a risk category."""
        return self.category != "none"

    @classmethod
    def from_labelled(cls, fields: dict[str, str], text: str) -> dict[str, Any]:
        """The category named in the answer ('self-harm', 'Suicidal ideation', 'unsafe: abuse'); 'safe' is none."""
        said = (fields["category"] or text).lower().replace("-", " ").replace("_", " ")
        named = [c for c in RISK_CATEGORIES if c.replace("_", " ") in said]
        category = (
            named[0]
            if len(named) == 1
            else ("none" if re.search(r"\b(none|safe|no risk)\b", said) else (fields["category"] or text))
        )
        return {"category": category, "reason": fields["reason"] or text.strip()}


def parse_verdict(text: str) -> str:
    """'1', '2' or 'tie' from 'Better: 2', 'Response 1 is better', 'the second one', 'a tie', ..."""
    explicit = re.search(r"better\s*[:\-]?\s*(?:response\s*)?(1|2|tie)\b", text, re.I)
    if explicit:
        return explicit.group(1).lower()
    if re.search(r"\b(tie|equally|neither|both are)\b", text, re.I):
        return "tie"
    return str(parse_choice(text, ["Response 1", "Response 2"]) + 1)


# --- helpers -------------------------------------------------------------------------------------

# English runs about 4 characters a token in SmolLM2's and Llama's tokenizers: 3 leaves room for odd words.
CHARACTERS_PER_TOKEN = 3
SHORTEST_TEXT = 48  # characters: the least a text field is cut to, however small the budget


def _structure_tokens(schema: dict[str, Any]) -> int:
    """Tokens for everything but the text: braces, keys, separators, numbers and enum values."""
    tokens = 2
    for key, field in schema["properties"].items():
        tokens += len(key) // CHARACTERS_PER_TOKEN + 4
        if "enum" in field:
            tokens += max(len(json.dumps(value)) for value in field["enum"]) // CHARACTERS_PER_TOKEN + 1
        elif "maxLength" not in field:
            tokens += 2  # a number
    return tokens


def _strip_titles(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("title", None)
        for value in node.values():
            _strip_titles(value)
    elif isinstance(node, list):
        for value in node:
            _strip_titles(value)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"field {'.'.join(map(str, error['loc'])) or '(answer)'}: {error['msg']}"
    return str(exc)
