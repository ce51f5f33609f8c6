"""The labelled stories behind probes and feature labels: which emotion each read story
shows, and whether its topic is held out. One place, so the probe fit, the feature
labels and the comparison agree on labels and split.

Shape letters: S stories, E emotions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from emosae import data


class StoryLabels(NamedTuple):
    """Labels of a list of stories, in its order."""

    emotions: list[str]
    """All emotion names, in the corpus order (index = label)."""
    y: Int[Tensor, " S"]
    """Emotion index of each story."""
    heldout: Bool[Tensor, " S"]
    """True for stories on a held-out topic (evaluation only)."""
    cluster_of: Int[Tensor, " E"]
    """Cluster index of each emotion (in `data.clusters()` order)."""

    @property
    def train(self) -> Bool[Tensor, " S"]:
        return ~self.heldout


def story_labels(story_ids: Sequence[str]) -> StoryLabels:
    """Labels and split of the stories with these ids (`<emotion>/<topic>`)."""
    emotions = data.emotion_names()
    idx = {e: i for i, e in enumerate(emotions)}
    stories = {s.id: s for s in data.load_stories("all")}
    sts = [stories[i] for i in story_ids]
    held = set(data.load_topics().heldout)
    clusters = data.clusters()
    return StoryLabels(
        emotions=emotions,
        y=torch.tensor([idx[s.emotion] for s in sts]),
        heldout=torch.tensor([s.topic in held for s in sts]),
        cluster_of=torch.tensor([clusters.index(e.cluster) for e in data.load_emotions()]),
    )


def subset_stories(stories: list[data.Story], max_per_emotion: int) -> list[data.Story]:
    """At most `max_per_emotion` stories per emotion, a third of them held-out (0: all)."""
    if max_per_emotion <= 0:
        return stories
    held = set(data.load_topics().heldout)
    n_held = max(1, -(-max_per_emotion // 3))
    out, seen = [], {}
    for s in stories:
        h = s.topic in held
        k = (s.emotion, h)
        cap = n_held if h else max_per_emotion - n_held
        if seen.get(k, 0) < cap:
            seen[k] = seen.get(k, 0) + 1
            out.append(s)
    return out
