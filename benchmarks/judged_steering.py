"""Do the shipped default vectors move judges that no vector was fitted on?

Each concept's shipped default vector (`emosae.load_directions()`) at its calibrated
default strength, against unsteered, on 20 everyday chat requests written here (none of
them among the calibration prompts), greedy 48-token replies with repetition penalty
1.1, judged by VADER, the NRC lexicon (mapped concepts), Warriner valence and the own
readout (not independent); `SteeredReplies.judged` gives each shift at +r against 0
with a bootstrap 95% interval and the success rate with a Wilson interval (a reply whose
distinct-2 ratio to the unsteered one is under 0.7 never succeeds). Writes
`benchmarks/results/judged_steering.md`.

    OMP_NUM_THREADS=1 python benchmarks/judged_steering.py
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import emosae
from emosae.data import load_neutral_prompts
from emosae.experiments.steered import steered_replies
from emosae.experiments.steering_summary import judged_headline, judged_markdown
from emosae.lm.models import load_model

PROMPTS = [
    "Can you give me a recipe for a simple tomato soup?",
    "How do I change a flat tyre on a bicycle?",
    "What should I pack for a weekend camping trip?",
    "Explain how a refrigerator keeps food cold.",
    "Suggest a name for a small bakery.",
    "How long should I boil an egg?",
    "Write a short email asking a colleague for a meeting next week.",
    "What are some good exercises to do at a desk?",
    "How often should I water a cactus?",
    "Summarise the rules of chess in a few sentences.",
    "What is a good way to organise a bookshelf?",
    "Give me three tips for learning a new language.",
    "How does a library card work?",
    "Plan a simple lunch menu for four people.",
    "What is the difference between a lake and a pond?",
    "How do I remove a coffee stain from a shirt?",
    "Recommend a board game for a family evening.",
    "Describe how to make a paper airplane.",
    "When is the best time of year to plant tulips?",
    "Write a reminder note to buy milk and bread.",
]
CONCEPTS = ["happy", "sad", "angry", "afraid", "calm", "grateful"]
OUT = Path(__file__).parent / "results" / "judged_steering.md"
log = logging.getLogger("emosae")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--concepts", nargs="+", default=CONCEPTS)
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--penalty", type=float, default=1.1)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    assert not set(PROMPTS) & set(load_neutral_prompts()), "prompts overlap calibration's"
    t0 = time.time()
    model = load_model(device="cpu")
    vecs = emosae.load_directions()
    rows, examples = [], []
    for c in a.concepts:
        vec, r = vecs[c], vecs[c].default_strength
        sr = steered_replies(
            model, vec, PROMPTS, [r], max_new_tokens=a.tokens, repetition_penalty=a.penalty
        )
        j, ppl = sr.judged(r), float(sr.ppl_ratio()[sr.row(r)])
        rows.append({"concept": c, "judged": j, "ppl_ratio": ppl, "hook": vec.hook_name})
        examples.append((c, r, sr.replies[sr.row(0.0)][0], sr.replies[sr.row(r)][0]))
        log.info(
            "%s at %+.3g: VADER %s; %.0f s", c, r, j.get("vader", {}).get("shift"), time.time() - t0
        )
    a.out.write_text(_report(a, vecs, rows, examples, time.time() - t0))
    log.info("wrote %s", a.out)


def _report(a, vecs, rows, examples, seconds: float) -> str:
    import json

    any_vec = vecs[a.concepts[0]]
    lines = [
        "# Judged steering: shipped default vectors on 20 unseen chat requests",
        "",
        f"Model {any_vec.model}, shipped default kind ({any_vec.source}); "
        f"greedy replies of at most {a.tokens} tokens, repetition penalty {a.penalty}; "
        f"{len(PROMPTS)} prompts (benchmarks/judged_steering.py, none among the calibration "
        f"prompts); CPU, {seconds / 60:.1f} min.",
        "",
        "Each cell: the direction the concept should move the judge, the mean shift at the "
        "default strength +r against unsteered [bootstrap 95% over prompts], and the success "
        "rate k/n [Wilson 95%]: prompts whose steered reply the judge scores further toward "
        "the concept than the unsteered reply, a reply with distinct-2 ratio < 0.7 never a "
        "success. n/a: the concept expects no direction from that judge (VADER, Warriner: "
        "name valence between 4 and 6) or has no NRC category (nrc_map.json). The own "
        "readout is the vector's direction read back: not independent.",
        "",
        judged_markdown(rows),
        "",
        "| concept | hook | median perplexity ratio at +r |",
        "|---|---|---|",
        *[f"| {r['concept']} | {r['hook']} | {r['ppl_ratio']:.2f} |" for r in rows],
        "",
        "Counts:",
        "",
        "```json",
        json.dumps(judged_headline(rows), indent=1),
        "```",
        "",
        f"First prompt ({PROMPTS[0]!r}), unsteered and steered:",
        "",
        *[f"- **{c}** {r:+.3g}: 0: {u!r} / +r: {s!r}" for c, r, u, s in examples],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
