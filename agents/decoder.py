"""Symptom decoder: compares what the therapist has inferred with what the encoder gave the patient.

The therapist states its inference as a :class:`DecoderInference` answer; each field is compared
with the encoded one (same key) by sentence-embedding cosine similarity. Fields under the threshold are deviations; the
feedback says what to ask about next (never the encoded answer itself) and goes into the
therapist's next prompt.
"""

from __future__ import annotations

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from mentalarena.agents import prompts
from mentalarena.agents.context import Context
from mentalarena.agents.embeddings import load_embeddings, pairwise_similarities
from mentalarena.agents.llm import answer, answer_log
from mentalarena.agents.parsing import ParseError
from mentalarena.agents.schemas import DecoderInference
from mentalarena.agents.state import ArenaState
from mentalarena.agents.therapist import therapist_messages


def write_feedback(similarities: dict[str, float], deviations: list[str], threshold: float) -> str:
    """The therapist's feedback: one line per deviating field, saying what to ask about next."""
    wording = DecoderInference.feedback_wording
    return "\n".join(
        prompts.DECODER_FEEDBACK_LINE.format(
            label=wording[key][0], similarity=similarities[key], threshold=threshold, guidance=wording[key][1]
        )
        for key in deviations
    )


def score_inference(
    inferred: dict[str, str], encoded: dict[str, str], context: Context, round_number: int, may_redirect: bool
) -> dict:
    """One decoder round: each encoded field against the inferred one, deviations and feedback."""
    keys = list(encoded)  # a field the profile leaves empty is not compared
    scores = pairwise_similarities(
        load_embeddings(context.embedding_model), [inferred.get(k, "") for k in keys], [encoded[k] for k in keys]
    )
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


def symptom_decoder(state: ArenaState, runtime: Runtime[Context]) -> dict:
    """Graph node: asks the therapist for its inference, scores it, and sends it back with feedback if it deviates."""
    context = runtime.context
    reply = answer(
        context,
        "therapist",
        therapist_messages(state, prompts.DECODER_INFERENCE),
        DecoderInference,
        {"kind": "inference", "instruction": prompts.DECODER_INFERENCE},
    )
    failures = []
    if reply.value is not None:
        inferred = reply.value.model_dump()
    else:  # the fields it did state are still scored; the others count as deviations
        try:
            inferred = DecoderInference.partial(reply.text)
        except ParseError:
            inferred = {key: "" for key in DecoderInference.model_fields}
        failures.append(
            {
                "node": "symptom_decoder",
                "reason": f"inference unparsed, unstated fields count as deviations: {reply.error}",
            }
        )
    redirections = state.get("redirections", 0)
    round_record = score_inference(
        inferred,
        state["encoded"],
        context,
        round_number=len(state.get("decoder_rounds", [])) + 1,
        may_redirect=redirections < context.max_redirections,
    )
    return {
        "decoder_rounds": [round_record],
        "feedback": round_record["feedback"] if round_record["redirected"] else "",
        "redirections": redirections + int(round_record["redirected"]),
        "failures": failures,
        "answers": [answer_log("symptom_decoder", DecoderInference, reply)],
    }
