"""Patient profiles: the cognitive conceptualization diagram (CCD) and its loaders.

Reads the Patient-Psi JSON format (a list of CCDs), JSONL of the same records, and the built-in
library in ``data/profiles.json``. A malformed file raises :class:`ProfileError` naming the file,
the record and the field, and nothing from that file is returned.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mentalarena.agents.jsonl import read_json_lines

ConversationalStyle = Literal["plain", "upset", "verbose", "reserved", "tangent", "pleasing"]
CONVERSATIONAL_STYLES: tuple[ConversationalStyle, ...] = get_args(ConversationalStyle)
# The long names MentalArena's own patient set (Patient-Psi-CM_dataset.json) gives the same styles.
STYLE_ALIASES = {"hostile": "upset", "guarded": "reserved", "go off on tangents": "tangent", "ingratiating": "pleasing"}
DEPRESSION_MARKER = "[during depression]"
# Patient-Psi numbers a patient's CCDs '<patient>-<n>' ('1-1', '1-2': two situations of patient 1). The
# part before the last '-<n>' must itself end in a number, so that a library's own numbering
# ('builtin-01', one person each) does not make one patient of the whole library.
PATIENT_PSI_NUMBERING = re.compile(r"(?P<patient>.*\d)-\d+")


class ProfileError(ValueError):
    """A profile file that cannot be loaded; the message names file, record and field."""


def canonical_style(name: str) -> str:
    """One of :data:`CONVERSATIONAL_STYLES` for a style's short or long name, any case; others unchanged
    (so validation names them)."""
    key = " ".join(name.split()).lower()
    return STYLE_ALIASES.get(key, key if key in CONVERSATIONAL_STYLES else name)


class PatientProfile(BaseModel):
    """One CCD. Field names follow Patient-Psi, so records round-trip to that format."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    id: str = Field(min_length=1)
    styles: list[ConversationalStyle] = Field(
        default_factory=lambda: list(CONVERSATIONAL_STYLES),
        validation_alias=AliasChoices("type", "styles"),
        serialization_alias="type",
        description="Conversational styles this patient may take (Patient-Psi's 'type').",
    )
    history: str = Field(min_length=1)
    helpless_belief: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("helpless_belief", "helpless_belief_current"),
    )
    unlovable_belief: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("unlovable_belief", "unlovable_belief_current"),
    )
    worthless_belief: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("worthless_belief", "worthless_belief_current"),
    )
    intermediate_belief: str = Field(min_length=1)
    intermediate_belief_depression: str = ""
    coping_strategies: str = Field(min_length=1)
    situation: str = Field(min_length=1)
    auto_thought: str = Field(min_length=1)
    emotion: list[str] = Field(min_length=1)
    behavior: str = Field(min_length=1)
    presentation: str = Field(
        default="",
        description="Clinical presentation in plain words; a label for evaluation, never shown to the therapist.",
    )
    patient: str = Field(
        default="",
        description=(
            "Who this CCD describes, when a set holds several CCDs of one person under other ids; see patient_identity."
        ),
    )

    @field_validator("emotion", "helpless_belief", "unlovable_belief", "worthless_belief", mode="before")
    @classmethod
    def _one_string_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("styles", mode="before")
    @classmethod
    def _long_style_names(cls, value: object) -> object:
        return (
            [canonical_style(style) if isinstance(style, str) else style for style in value]
            if isinstance(value, list)
            else value
        )

    @field_validator("styles", mode="after")
    @classmethod
    def _at_least_one_style(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one conversational style")
        return value

    @model_validator(mode="before")
    @classmethod
    def _split_depression_beliefs(cls, data: object) -> object:
        # Patient-Psi keeps beliefs during depression inside intermediate_belief after a marker.
        if isinstance(data, dict) and not data.get("intermediate_belief_depression"):
            text = data.get("intermediate_belief")
            if isinstance(text, str) and DEPRESSION_MARKER in text:
                before, _, after = text.partition(DEPRESSION_MARKER)
                data = {**data, "intermediate_belief": before.strip(), "intermediate_belief_depression": after.strip()}
        return data

    @property
    def core_beliefs(self) -> list[str]:
        """The helpless, unlovable and worthless beliefs, in that order."""
        return [*self.helpless_belief, *self.unlovable_belief, *self.worthless_belief]

    def to_patient_psi(self) -> dict:
        """The profile as a Patient-Psi record (its field names, e.g. 'type' for the styles)."""
        return self.model_dump(by_alias=True)


def patient_identity(profile: Mapping) -> str:
    """Who a profile (a Patient-Psi dict) describes: one patient's profiles must stay on one side of a split.

    Its 'patient' key where given; else, in Patient-Psi's numbering, its id before the last '-<n>';
    else its name and a hash of name and history; a profile with neither is a patient of its own (its id).
    """
    if profile.get("patient"):
        return str(profile["patient"])
    profile_id = str(profile.get("id", ""))
    numbered = PATIENT_PSI_NUMBERING.fullmatch(profile_id)
    if numbered:
        return numbered["patient"]
    name, history = str(profile.get("name", "")), str(profile.get("history", ""))
    if not name and not history:
        return profile_id
    digest = hashlib.blake2b(f"{name}\n{history}".encode(), digest_size=6).hexdigest()
    return f"{name}#{digest}"


def _record_label(index: int, record: object) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"record {index}" + (f" (id {rid!r})" if rid else "")


def parse_profiles(records: list[object], source: str) -> list[PatientProfile]:
    """Validate raw records; all-or-nothing, with every problem named."""
    problems: list[str] = []
    profiles: list[PatientProfile] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(
                f"{source}: {_record_label(index, record)}: expected an object, got {type(record).__name__}"
            )
            continue
        try:
            profiles.append(PatientProfile.model_validate(record))
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(part) for part in error["loc"]) or "(record)"
                problems.append(f"{source}: {_record_label(index, record)}: field '{field}': {error['msg']}")
    seen: dict[str, int] = {}
    for index, profile in enumerate(profiles):
        if profile.id in seen:
            problems.append(f"{source}: record {index} (id {profile.id!r}): field 'id': duplicate of an earlier record")
        seen[profile.id] = index
    if problems:
        raise ProfileError("\n".join(problems))
    return profiles


def load_profiles(path: str | Path) -> list[PatientProfile]:
    """Load a Patient-Psi JSON file (a list of CCDs, or one CCD) or a JSONL file of CCDs."""
    path = Path(path)
    try:
        if path.suffix == ".jsonl":
            records: list[object] = [record for _, record in read_json_lines(path, ProfileError)]
        else:
            text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if path.suffix != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from exc
        records = data if isinstance(data, list) else [data]
    if not records:
        raise ProfileError(f"{path}: holds no profiles")
    return parse_profiles(records, str(path))


def builtin_profiles() -> list[PatientProfile]:
    """The project's own library of original profiles, covering distinct presentations."""
    return list(_builtin_profiles())


@functools.lru_cache(maxsize=1)
def _builtin_profiles() -> tuple[PatientProfile, ...]:
    # Read and validated once: every session started from a built-in id looks it up here.
    resource = importlib.resources.files("mentalarena.agents") / "data" / "profiles.json"
    return tuple(parse_profiles(json.loads(resource.read_text(encoding="utf-8")), "builtin profiles"))


def load_profile_source(source: str) -> list[PatientProfile]:
    """'builtin', or a Patient-Psi JSON / JSONL file."""
    return builtin_profiles() if source == "builtin" else load_profiles(source)


def find_profile(profile_id: str, profiles: list[PatientProfile] | None = None) -> PatientProfile:
    """The profile with ``profile_id`` among ``profiles`` (default: the built-in ones); a ProfileError if none."""
    pool = profiles if profiles is not None else builtin_profiles()
    for profile in pool:
        if profile.id == profile_id:
            return profile
    raise ProfileError(f"no profile with id {profile_id!r} (known: {', '.join(p.id for p in pool[:8])}...)")
