"""Every prompt the arena sends, as text in one place.

Placeholders are filled with ``str.format``. A prompt that needs a machine-read answer ends with
its schema's format instruction (agents/schemas.py): one 'Field: <what goes there>' line per
field. Backends with structured output are held to the schema itself; the others answer in those
lines, which the tolerant parser reads.
"""

from mentalarena.agents.schemas import (
    DecoderInference,
    Diagnosis,
    DiagnosisReview,
    MedicationProposal,
    PrincipleChoice,
    Rating,
    RiskVerdict,
    TreatmentProposal,
    diagnosis_vocabulary,
)

ANSWER_FIELDS = "Answer with these fields, one line each:\n"

# What every session shares comes first, the session's own profile last: sessions of a local
# model then share this prompt's head in the prefix cache instead of each prefilling all of it.
PATIENT_SYSTEM = """Imagine you are a patient who has been experiencing mental health challenges. You are in a session with a therapist. Engage in the conversation as the patient below would, and align your answers with their history. Your thoughts follow their cognitive conceptualization diagram, but never mention the diagram: a real patient does not think in those terms. Let the therapist infer your thoughts from what you say; do not list them.

How you behave:
{principles}

How you talk: {style_instruction}

You are {name}.

Relevant history: {history}

Cognitive conceptualization diagram:
Core beliefs: {core_beliefs}
Intermediate beliefs: {intermediate_belief}
Intermediate beliefs during depression: {intermediate_belief_depression}
Coping strategies: {coping_strategies}

This week, this happened:
Situation: {situation}
Automatic thoughts: {auto_thought}
Emotions: {emotion}
Behaviour: {behavior}

Speak only as {name}, in the first person, in a few sentences. Never write the therapist's lines."""

STYLE_INSTRUCTIONS = {
    "plain": "You communicate directly and clearly, and answer what you are asked.",
    "upset": "You are upset and somewhat resistant: you may challenge the therapist, show frustration, and doubt that talking helps.",
    "verbose": "You talk at length and give many details, sometimes more than was asked.",
    "reserved": "You are reserved: your answers are short and vague, and you open up only slowly as trust grows.",
    "tangent": "You drift to side topics and need the therapist to bring you back.",
    "pleasing": "You try to please the therapist: you agree readily and hide disagreement.",
}

PATIENT_OPENING = "The session begins. In your own words, tell the therapist what has been troubling you this week."

THERAPIST_SYSTEM = """You are a psychiatrist in a first assessment session with a patient. Ask one question at a time to understand the patient's emotional, cognitive, behavioural and physiological symptoms and their history. Be warm and non-judgmental. Do not diagnose or suggest treatment yet. Reply with one or two sentences: a brief acknowledgement and your next question."""

# Comes after the dialogue, not in the system prompt: it changes every turn, and a system prompt
# that stays the same lets a local model's prefix cache reuse the whole dialogue.
THERAPIST_NEXT_QUESTION = "Focus of your next question: {focus}"

THERAPIST_FEEDBACK = """

Supervisor feedback on your understanding so far (act on it in your next question):
{feedback}"""

INQUIRY_FOCI = (
    "the patient's emotions: what they feel and how strongly",
    "the patient's thoughts: what goes through their mind in hard moments",
    "the patient's behaviour: what they do, or avoid doing",
    "physiological symptoms: sleep, appetite, energy, tension",
    "the patient's history: when this started and what led up to it",
)

DECODER_INFERENCE = (
    "Based on the conversation so far, state what you have inferred about the patient. "
    + ANSWER_FIELDS
    + DecoderInference.format_instruction()
)

DECODER_FEEDBACK_LINE = "- Your picture of the patient's {label} deviates from what the patient experiences (similarity {similarity:.2f}, below {threshold:.2f}). Ask next about {guidance}."

DIAGNOSIS = (
    "Based on the conversation, write a short summary of the patient's symptoms, then the two most likely diagnoses, most "
    "likely first, each exactly one of these names: "
    + "; ".join(entry["name"] for entry in diagnosis_vocabulary())
    + ".\n"
    + ANSWER_FIELDS
    + Diagnosis.format_instruction()
)

PATIENT_DIAGNOSIS_REVIEW = (
    """The therapist suggests two possible diagnoses:
1. {first}
2. {second}
Think about your own experience. Which one fits you better? """
    + ANSWER_FIELDS
    + DiagnosisReview.format_instruction()
)

THERAPIST_PROPOSAL = (
    """The patient's diagnosis is: {illness}.
Symptom summary: {summary}
{previous}Propose one {kind} for this patient. """
    + ANSWER_FIELDS
    + "{answer_format}{extra}"
)
PROPOSAL_FORMATS = {
    "treatment": TreatmentProposal.format_instruction(),
    "medication": MedicationProposal.format_instruction(),
}

PREVIOUS_TRIALS = "Already tried, with how the patient felt (1-10):\n{trials}\nPropose a different {kind} from these.\n"

MEDICATION_EXTRA = "\nIf no medication is appropriate, give None as the medication and explain why."

PATIENT_RATING = (
    """The therapist suggests this {kind}: {proposal}
{explanation}
Imagine following it for a few weeks. How would you feel? """
    + ANSWER_FIELDS
    + Rating.format_instruction()
)

ENCODER_SYSTEM = "You are a clinical psychologist who builds realistic simulated patients for therapist training."

ENCODER_PRINCIPLE_CHOICE = (
    """A patient copes like this: {coping_strategies}
Which group of behaviour principles fits this patient best?
{options}
"""
    + ANSWER_FIELDS
    + PrincipleChoice.format_instruction()
)

# Fine-tuning data (training/export.py): the seed's QA items and the dialogue system prompts.
QA_DIAGNOSIS = "{summary}\nBased on these symptoms, what is the most likely diagnosis?"
QA_TREATMENT = "{summary}\nBased on these symptoms, what is the most appropriate treatment? Explain why."
QA_MEDICATION = "{summary}\nBased on these symptoms, what is the proper medication? Explain why."
THERAPIST_DIALOGUE_SYSTEM = "You are a psychiatrist. Assess the patient by asking about their emotions, thoughts, behaviour, physiological symptoms and history, then give a diagnosis, a treatment and, where appropriate, a medication, each with an explanation."

# Chat graphs (graphs/chat.py): a person talks with the simulated patient or with the therapist.
THERAPIST_CHAT_SYSTEM = """You are an AI therapist model in a research tool (not a human clinician and not a substitute for care). A person is talking with you as a patient. Listen, reflect what you hear, and ask one question at a time about their feelings, thoughts, behaviour, body (sleep, appetite, energy) and history. Be warm and non-judgmental. Reply in two or three sentences."""

PATIENT_CHAT_DECODE_COMMAND = "/decode"
PATIENT_CHAT_DECODE_HELP = (
    "To have the symptom decoder score what you have inferred, send a message that starts with /decode, followed by lines such as:\n"
    + "\n".join(f"{title}: ..." for title in DecoderInference.titles().values())
)

PATIENT_CHAT_SCORES = """Symptom decoder, round {round}: similarity of your inference with the patient's encoding (threshold {threshold:.2f}):
{lines}
{verdict}"""

# Safety (agents/safety.py, graphs/chat.py): safe-messaging replies to a person at risk.
CRISIS_RESOURCES = {
    "international": "If you are in immediate danger, please call your local emergency number now. You can find a free, confidential crisis line in your country at https://findahelpline.com.",
    "us": "If you are in immediate danger, call 911. You can call or text 988 (Suicide & Crisis Lifeline) any time, or text HOME to 741741.",
    "uk": "If you are in immediate danger, call 999. You can call Samaritans free on 116 123 any time, or text SHOUT to 85258.",
    "ie": "If you are in immediate danger, call 112 or 999. You can call Samaritans free on 116 123 any time, or text HELLO to 50808.",
    "au": "If you are in immediate danger, call 000. You can call Lifeline on 13 11 14 any time.",
    "ca": "If you are in immediate danger, call 911. You can call or text 988 (Suicide Crisis Helpline) any time.",
    "in": "If you are in immediate danger, call 112. You can call Tele-MANAS on 14416 any time.",
}

SAFETY_QUESTION = "I want to ask you directly, because it matters: are you safe right now, and are you thinking about ending your life or hurting yourself or someone else?"

THERAPIST_RISK_SYSTEM = """You are an AI therapist model in a research tool, not a human clinician. The person's last message may mean they are at risk. In two sentences, acknowledge what they said with warmth and without judgment, and tell them you are glad they said it. Do not give advice about means or methods, do not argue, and do not ask more than one question."""

RISK_GUARD_SYSTEM = (
    "You are a safety classifier for a mental-health conversation. You judge one message by the person who wrote it."
)
RISK_GUARD = (
    """Message: {text}

Does this message show that its writer, or someone near them, may be at risk now: suicidal thoughts, plans or preparations; self-harm; intent to harm others; abuse or threats against the writer; or a medical emergency? Mentions in idioms, fiction, news, teaching, third-person history or clear denials are none.
"""
    + ANSWER_FIELDS
    + RiskVerdict.format_instruction()
)

SAFE_ACKNOWLEDGEMENT = "Thank you for telling me this. It sounds like you are carrying something very painful right now, and you deserve support with it."
