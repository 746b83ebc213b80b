"""Tolerant parsing of free-text model answers.

Local models give no structured output, so prompts ask for a simple labelled format and these
functions read it leniently. Each raises :class:`ParseError` when nothing usable is there, so the
caller can retry and, past its bound, record the failure.
"""

from __future__ import annotations

import re

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}
ORDINALS = {"first": 0, "second": 1, "1st": 0, "2nd": 1}
SPEAKER_PREFIX = re.compile(r"^\s*\**\s*(patient|therapist|client|counsell?or|assistant|user|doctor)\s*\**\s*:\s*", re.I)
NEXT_SPEAKER = re.compile(r"\n\s*\**\s*(patient|therapist|client|counsell?or|user|doctor)\s*\**\s*:", re.I)
REFUSALS = {"", "none", "n/a", "na", "no", "nothing", "not applicable", "no medication", "none needed", "-"}


class ParseError(ValueError):
    """The answer holds nothing the parser could use."""


def clean_turn(text: str) -> str:
    """One speaker's turn: drop a leading role label and anything after a made-up next speaker."""
    text = SPEAKER_PREFIX.sub("", text.strip())
    text = NEXT_SPEAKER.split(text, maxsplit=1)[0]
    return text.strip().strip('"').strip()


def require_text(text: str) -> str:
    cleaned = clean_turn(text)
    if not re.search(r"[A-Za-z]{2,}", cleaned):
        raise ParseError(f"empty or garbled turn: {text[:80]!r}")
    return cleaned


def parse_score(text: str, low: int = 1, high: int = 10) -> int:
    """A rating such as '7/10', 'Score: 7', 'I'd say seven', '**8**'."""
    lowered = text.lower()
    patterns = (
        r"(\d{1,2})\s*(?:/|out of)\s*10",
        r"(?:score|rating|rate|feel)[^\d\n]{0,25}(\d{1,2})",
        r"(?<![\d./])(\d{1,2})(?![\d.]|\s*/)",
    )
    for pattern in patterns:
        values = [int(m.group(1)) for m in re.finditer(pattern, lowered)]
        for value in values:
            if low <= value <= high:
                return value
        if values and pattern == patterns[0]:
            break  # an explicit 'N/10' out of range is not rescued by stray numbers
    for word, value in NUMBER_WORDS.items():
        if re.search(rf"\b{word}\b", lowered) and low <= value <= high:
            return value
    raise ParseError(f"no score between {low} and {high} in {text[:80]!r}")


def parse_numbered_items(text: str, count: int, minimum: int | None = None) -> list[str]:
    """The first ``count`` distinct items of a numbered, lettered or bulleted list (at least ``minimum``)."""
    item = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|\(?[A-Da-d][.)]|(?:diagnosis|option|candidate)\s*\d*\s*[:.)-])\s*(.+)$", re.I)
    found: list[str] = []
    for line in text.splitlines():
        match = item.match(line)
        if not match:
            continue
        value = re.sub(r"[*_`]+", "", match.group(1)).strip(" .:-")
        if value and value.lower() not in {f.lower() for f in found}:
            found.append(value)
        if len(found) == count:
            return found
    if found and len(found) >= (minimum or count):
        return found
    raise ParseError(f"expected {count} listed items, found {len(found)} in {text[:120]!r}")


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+|\n", clean_turn(text), maxsplit=1)[0].strip()


def parse_choice(text: str, candidates: list[str]) -> int:
    """Index of the candidate an answer picks: by number, letter, ordinal, or by naming it."""
    lowered = text.lower()
    explicit = re.search(r"\b(?:option|diagnosis|candidate|number|choice|pick|choose|chose)?\s*#?\(?([1-9])\)?\b", lowered)
    if explicit and 1 <= int(explicit.group(1)) <= len(candidates):
        return int(explicit.group(1)) - 1
    for word, index in ORDINALS.items():
        if re.search(rf"\b{word}\b", lowered) and index < len(candidates):
            return index
    letter = re.search(r"\b(?:option|choice)?\s*\(?([a-d])\)\s*|\boption\s+([a-d])\b", lowered)
    if letter:
        index = ord((letter.group(1) or letter.group(2))) - ord("a")
        if index < len(candidates):
            return index
    overlaps = [_word_overlap(lowered, candidate.lower()) for candidate in candidates]
    best = max(range(len(candidates)), key=overlaps.__getitem__)
    if overlaps[best] > 0 and overlaps.count(overlaps[best]) == 1:
        return best
    raise ParseError(f"no choice among {len(candidates)} candidates in {text[:80]!r}")


def _word_overlap(text: str, candidate: str) -> int:
    words = {w for w in re.findall(r"[a-z]{4,}", candidate) if w not in {"disorder", "with", "episode"}}
    return sum(1 for w in words if w in text)


def parse_labelled_fields(text: str, labels: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Split 'Label: value' sections; ``labels`` maps each key to the label spellings accepted.

    Missing labels map to ''. At least one label must be found.
    """
    spellings = sorted(((alias, key) for key, aliases in labels.items() for alias in aliases), key=lambda p: -len(p[0]))
    header = re.compile(
        r"^\s*(?:[-*•]|\d+[.)])?\s*\**\s*(" + "|".join(re.escape(a) for a, _ in spellings) + r")\s*\**\s*[:：-]\s*",
        re.I | re.M,
    )
    alias_to_key = {alias.lower(): key for alias, key in spellings}
    matches = list(header.finditer(text))
    if not matches:
        raise ParseError(f"none of the labels {sorted(labels)} found in {text[:120]!r}")
    fields = {key: "" for key in labels}
    for match, following in zip(matches, [*matches[1:], None]):
        key = alias_to_key[match.group(1).lower()]
        value = text[match.end(): following.start() if following else len(text)].strip()
        if value and not fields[key]:
            fields[key] = re.sub(r"\s+", " ", value.replace("**", "")).strip()
    return fields


def parse_proposal(text: str, label: str) -> tuple[str, str]:
    """(proposal, explanation) from '<Label>: ... Explanation: ...', leniently."""
    try:
        fields = parse_labelled_fields(text, {"proposal": (label,), "explanation": ("explanation", "reason", "why")})
    except ParseError:
        fields = {"proposal": "", "explanation": ""}
    proposal, explanation = fields["proposal"], fields["explanation"]
    if not proposal:
        body = clean_turn(text)
        first = first_sentence(body)
        proposal = first
        explanation = explanation or body[len(first):].strip()
    if not re.search(r"[A-Za-z]{3,}", proposal) or re.search(r"<[^>]*>|\[insert", proposal, re.I):
        raise ParseError(f"no {label.lower()} in {text[:80]!r}")
    return proposal, explanation


def is_refusal(text: str) -> bool:
    """True for an empty medication or a refusal such as 'None' or 'N/A'."""
    return text.strip().strip(".").lower() in REFUSALS
