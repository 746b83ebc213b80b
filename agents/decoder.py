"""Symptom decoder: compares what the therapist has inferred with what the encoder gave the patient.

The therapist states its inference in a labelled format; each field is compared with the encoded
one by sentence-embedding cosine similarity. Fields under the threshold are deviations; the
feedback says what to ask about next (never the encoded answer itself) and goes into the
therapist's next prompt.
"""

from __future__ import annotations

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from mentalarena.agents import prompts
from mentalarena.agents.embeddings import load_embeddings, pairwise_similarities
from mentalarena.agents.encoder import DECODED_FIELDS
from mentalarena.agents.llm import speak
from mentalarena.agents.parsing import parse_labelled_fields
from mentalarena.agents.therapist import therapist_messages

INFERENCE_LABELS = {
    "intermediate_belief": ("intermediate beliefs", "intermediate belief"),
    "intermediate_belief_depression": ("beliefs during depression", "belief during depression", "intermediate beliefs during depression"),
    "coping_strategies": ("coping strategies", "coping strategy", "coping"),
    "situation": ("situation, thoughts, emotions and behaviour", "situation, thoughts, emotions and behavior", "situation"),
    "behaviour_principles": ("behaviour principles", "behavior principles", "behaviour", "behavior"),
}


def write_feedback(similarities: dict[str, float], deviations: list[str], threshold: float) -> str:
    return "\n".join(
        prompts.DECODER_FEEDBACK_LINE.format(
            label=DECODED_FIELDS[key][0], similarity=similarities[key], threshold=threshold, guidance=DECODED_FIELDS[key][1]
        )
        for key in deviations
    )


def score_inference(inferred: dict[str, str], encoded: dict[str, str], context, round_number: int, may_redirect: bool) -> dict:
    """One decoder round: each encoded field against the inferred one, deviations and feedback."""
    keys = list(encoded)  # a field the profile leaves empty is not compared
    scores = pairwise_similarities(load_embeddings(context.embedding_model), [inferred.get(k, "") for k in keys], [encoded[k] for k in keys])
    similarities = dict(zip(keys, scores))
    deviations = [key for key in keys if similarities[key] < context.similarity_threshold]
    round_record = {
        "round": round_number,
        "inferred": inferred,
        "similarities": similarities,
        "deviations": deviations,
        "feedback": write_feedback(similarities, deviations, context.similarity_threshold) if deviations else "",
        "redirected": bool(deviations) and may_redirect,
    }
    get_stream_writer()({"event": "decoder_round", **round_record})  # for apps that stream 'custom'
    return round_record


def symptom_decoder(state: dict, runtime: Runtime) -> dict:
    context = runtime.context
    inferred, _, error = speak(
        context, "therapist", therapist_messages(state, prompts.DECODER_INFERENCE),
        lambda text: parse_labelled_fields(text, INFERENCE_LABELS), {"kind": "inference", "instruction": prompts.DECODER_INFERENCE},
    )
    failures = [{"node": "symptom_decoder", "reason": f"inference unparsed, every field counts as a deviation: {error}"}] if error else []
    redirections = state.get("redirections", 0)
    round_record = score_inference(
        inferred or {key: "" for key in INFERENCE_LABELS}, state["encoded"], context,
        round_number=len(state.get("decoder_rounds", [])) + 1, may_redirect=redirections < context.max_redirections,
    )
    return {
        "decoder_rounds": [round_record],
        "feedback": round_record["feedback"] if round_record["redirected"] else "",
        "redirections": redirections + int(round_record["redirected"]),
        "failures": failures,
    }
