"""The labelled stories behind probes and feature labels: which concept each read story
shows, and whether its topic is held out. One place, so the probe fit, the feature
labels and the comparison agree on labels and split.

The probe folder records the labels with the story activations (`labels_meta`), so a
folder is read back without its concept set; folders of emosae 0.1 (bundled emotions,
story ids only) are labelled from the bundled set.

Shape letters: S stories, E concepts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from emosae import data
from emosae.data.concepts import ConceptSet, bundled


class StoryLabels(NamedTuple):
    """Labels of a list of stories, in its order."""

    concepts: list[str]
    """All concept names, in the set's order (index = label)."""
    y: Int[Tensor, " S"]
    """Concept index of each story."""
    heldout: Bool[Tensor, " S"]
    """True for stories on a held-out topic (evaluation only)."""
    group_of: Int[Tensor, " E"]
    """Group index of each concept (in `groups` order)."""
    groups: list[str]

    @property
    def train(self) -> Bool[Tensor, " S"]:
        return ~self.heldout


def labels_meta(cs: ConceptSet, stories: list[data.Story]) -> dict[str, Any]:
    """What the probe folder records about the stories it read (json-able)."""
    idx = {c: i for i, c in enumerate(cs.names)}
    return {
        "concept_set": {"name": cs.name, "fingerprint": cs.fingerprint},
        "concepts": cs.names,
        "groups": cs.groups,
        "concept_group": [c.group for c in cs.concepts],
        "valence": cs.norms()[0],
        "arousal": cs.norms()[1],
        "story_ids": [s.id for s in stories],
        "story_concept": [idx[s.concept] for s in stories],
        "story_heldout": [cs.is_heldout(s) for s in stories],
        "heldout_topics": list(cs.heldout_topics),
    }


def story_labels(meta: dict[str, Any]) -> StoryLabels:
    """Labels and split recorded in a probe folder's story-activation metadata."""
    if "story_concept" not in meta:  # an emosae 0.1 folder: bundled emotions
        cs = bundled()
        by_id = {s.id: s for s in cs.stories}
        meta = {**labels_meta(cs, [by_id[i] for i in meta["story_ids"]]), **meta}
    groups = list(meta["groups"])
    return StoryLabels(
        concepts=list(meta["concepts"]),
        y=torch.tensor(meta["story_concept"], dtype=torch.long),
        heldout=torch.tensor(meta["story_heldout"], dtype=torch.bool),
        group_of=torch.tensor([groups.index(g) for g in meta["concept_group"]]),
        groups=groups,
    )


def subset_stories(cs: ConceptSet, max_per_concept: int) -> list[data.Story]:
    """At most `max_per_concept` stories per concept, a third of them held-out (0: all)."""
    stories = list(cs.stories)
    if max_per_concept <= 0:
        return stories
    n_held = max(1, -(-max_per_concept // 3))
    out, seen = [], {}
    for s in stories:
        h = cs.is_heldout(s)
        k = (s.concept, h)
        cap = n_held if h else max_per_concept - n_held
        if seen.get(k, 0) < cap:
            seen[k] = seen.get(k, 0) + 1
            out.append(s)
    return out
