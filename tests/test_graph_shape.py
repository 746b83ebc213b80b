"""The arena's shape: a snapshot of its mermaid, which the README embeds too."""

import re
from pathlib import Path

from mentalarena.graphs.arena import graph

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).with_name("snapshots") / "arena.mmd"


def test_mermaid_matches_the_snapshot():
    assert graph.get_graph().draw_mermaid() == SNAPSHOT.read_text()


def test_readme_embeds_the_current_graph():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", readme, re.S)
    assert block, "README has no mermaid block"
    assert block.group(1) == SNAPSHOT.read_text()


def test_the_deviation_edge_goes_from_decoder_to_therapist():
    edges = {(e.source, e.target, e.conditional) for e in graph.get_graph().edges}
    assert ("symptom_decoder", "therapist", True) in edges
    assert ("symptom_decoder", "diagnosis", True) in edges
    assert ("symptom_encoder", "patient", False) in edges
