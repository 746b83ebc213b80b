"""Tolerant parsing of free-text model answers.

Local models give no structured output, so prompts ask for a simple labelled format and these
functions read it leniently. Each raises :class:`ParseError` when nothing usable is there, so the
caller can retry and, past its bound, record the failure.
"""

from __future__ import annotations

import re

NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
# Ordinal words and the candidate index they name ('former' and 'latter' of two); '1st', '2nd', ...
# are read from their digit.
ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "former": 0, "latter": 1}
# A number, in digits or words. Digits inside a decimal, a longer number or an ordinal ('2.5', '123', '2nd') are none;
# 'one' after a determiner or before 'of' is a pronoun ('this one', 'no one', 'one of them'); and a number
# followed by what it counts ('2 weeks', '10 mg', '3 things') is a quantity, never a rating or a pick.
NUMBER = (
    r"(?:(?<![\d.])\d{1,2}(?![\da-z]|\.\d)"
    rf"|\b(?:{'|'.join(w for w in NUMBER_WORDS if w != 'one')})\b"
    r"|(?<!this )(?<!that )(?<!the )(?<!no )(?<!any )(?<!each )(?<!every )(?<!which )(?<!other )\bone\b(?!\s+of\b))"
    r"(?!\s*(?:seconds?|minutes?|hours?|days?|nights?|weeks?|months?|years?|times?|sessions?|things?|people|steps?"
    r"|mg|milligrams?|pills?|tablets?|doses?)\b)"
)
SPEAKER_PREFIX = re.compile(
    r"^\s*\**\s*(patient|therapist|client|counsell?or|assistant|user|doctor)\s*\**\s*:\s*", re.I
)
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
    """The cleaned turn (:func:`clean_turn`); a ParseError if it has no word in it."""
    cleaned = clean_turn(text)
    if not re.search(r"[A-Za-z]{2,}", cleaned):
        raise ParseError(f"empty or garbled turn: {text[:80]!r}")
    return cleaned


def _number(token: str) -> int:
    return NUMBER_WORDS.get(token) or int(token)


def _spellings(value: int) -> str:
    """Regex alternatives for one number in digits or words: 10 -> '10|ten'."""
    return "|".join([str(value), *(word for word, number in NUMBER_WORDS.items() if number == value)])


def parse_score(text: str, low: int = 1, high: int = 10) -> int:
    """A rating such as 'Score: 7', '7/10', 'I'd say seven', '**8**'.

    A scale the answer repeats ('on a scale of 1 to 10') is dropped first. Then, most trusted first:
    'N/10' or 'N out of 10' (if all of them are out of range there is no score); a labelled number
    ('Score: 8', 'rating of 8', 'I'd rate it a six') or one that opens the answer ('8.', '7, because');
    and last, the last other number, since the prompts ask for a description first and the rating
    after it. Digits and number words are read alike.
    """
    lowered = re.sub(r"[*_`]+", "", text.lower())  # '**6** out of 10' reads as '6 out of 10'
    # A scale names its ends, which are not ratings: '1 to 10', '1-10', 'from 1 (much worse) to
    # 10 (much better)', 'scale of 10'.
    scale = (
        rf"\b(?:0|{_spellings(low)})\s*(?:\([^)]*\)\s*)?(?:to|-|–|—)\s*(?:{_spellings(high)})\b"
        rf"|\bscale\s+of\s+(?:{_spellings(high)})\b"
    )
    lowered = re.sub(scale, " ", lowered)
    fraction = rf"({NUMBER})\s*(?:/|out\s+of)\s*(?:{_spellings(high)})\b"
    # The lazy gap stops at the first number after the label; an opening number must end at punctuation or the end.
    labelled = rf"\b(?:score|rating|rate|rated)\b[^\d\n]{{0,25}}?({NUMBER})|\A\W*({NUMBER})(?=\s*(?:[^\w\s]|$))"
    stray = rf"(?<!/)({NUMBER})(?!\s*/)"  # not a part of a fraction such as '3/4'

    def values(pattern: str) -> list[int]:
        return [_number(next(filter(None, match.groups()))) for match in re.finditer(pattern, lowered)]

    fractions = values(fraction)
    if fractions and not any(low <= value <= high for value in fractions):
        raise ParseError(
            f"score out of {low}-{high} in {text[:80]!r}"
        )  # an explicit '11/10' is not rescued by stray numbers
    for found in (fractions, values(labelled), values(stray)[::-1]):
        for value in found:
            if low <= value <= high:
                return value
    raise ParseError(f"no score between {low} and {high} in {text[:80]!r}")


def parse_numbered_items(text: str, count: int, minimum: int | None = None) -> list[str]:
    """The first ``count`` distinct items of a numbered, lettered or bulleted list (at least ``minimum``)."""
    item = re.compile(
        r"^\s*(?:[-*•]|\(?\d+[.):]|\(?[A-Da-d][.)]|(?:diagnosis|option|candidate)\s*\d*\s*[:.)-])\s*(.+)$", re.I
    )
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
    """The cleaned turn's first sentence or line."""
    return re.split(r"(?<=[.!?])\s+|\n", clean_turn(text), maxsplit=1)[0].strip()


def parse_choice(text: str, candidates: list[str]) -> int:
    """Index of the candidate an answer picks: by number, ordinal, letter, or by naming it.

    A number counts only where it stands as the answer: opening the reply ('2.', '(1) because'),
    after a word that introduces a pick ('I pick number 2', 'option two', 'Response 1 is better'),
    or as '#2' or '(2)'; 'for 2 years' picks nothing. Numbers and ordinals ('the first one',
    'the latter', '2nd') are read in text order: the earliest that names a candidate wins.
    """
    lowered = text.lower()
    number = (
        rf"\A\W*({NUMBER})|#\s*({NUMBER})|\(({NUMBER})\)"
        r"|\b(?:option|number|choice|choose|chose|pick|picked|diagnosis|candidate|response|answer)"
        rf"(?:\s+(?:is|was))?\s*[:#]?\s*\(?({NUMBER})"
    )
    # Not the adverbs 'at first', 'first of all', 'the first time', 'a second' (of time), nor
    # 'first-line' or 'second-guess'.
    ordinal = rf"(?<!\bat )(?<!\ba )\b({'|'.join(ORDINALS)}|[1-9](?:st|nd|rd|th))\b(?!-|\s+(?:of\s+all|time)\b)"
    picks = [(match.start(), _number(next(filter(None, match.groups()))) - 1) for match in re.finditer(number, lowered)]
    for match in re.finditer(ordinal, lowered):
        word = match.group(1)
        picks.append((match.start(), ORDINALS[word] if word in ORDINALS else int(word[0]) - 1))
    for _, index in sorted(picks):
        if index < len(candidates):
            return index
    letter = re.search(r"\b(?:option|choice)?\s*\(?([a-d])\)\s*|\boption\s+([a-d])\b", lowered)
    if letter:
        index = ord(letter.group(1) or letter.group(2)) - ord("a")
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
        value = text[match.end() : following.start() if following else len(text)].strip()
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
        explanation = explanation or body[len(first) :].strip()
    if not re.search(r"[A-Za-z]{3,}", proposal) or re.search(r"<[^>]*>|\[insert", proposal, re.I):
        raise ParseError(f"no {label.lower()} in {text[:80]!r}")
    return proposal, explanation


def is_refusal(text: str) -> bool:
    """True for an empty medication or a refusal such as 'None' or 'N/A'."""
    return text.strip().strip(".").lower() in REFUSALS
