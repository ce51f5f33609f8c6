"""Check hand-written stories while writing them: python tools/check_stories.py [emotion ...]

Reads emosae/data/resources directly (no install needed) and prints every problem.
"""

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

root = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("checks", root / "emosae/data/checks.py")
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)
res = root / "emosae/data/resources"
emotions = {e["name"]: e for e in json.loads((res / "emotions.json").read_text())["emotions"]}
topics = {t["id"] for t in json.loads((res / "topics.json").read_text())["topics"]}
wanted = sys.argv[1:] or sorted(p.stem for p in (res / "stories").glob("*.jsonl"))
problems = 0
all_texts, where = [], []
for path in sorted((res / "stories").glob("*.jsonl")):
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                all_texts.append(json.loads(line)["text"])
                where.append(f"{path.name}:{ln}")
            except Exception:
                pass
for name in wanted:
    path = res / "stories" / f"{name}.jsonl"
    if name not in emotions:
        print(f"{name}: not an emotion in emotions.json")
        problems += 1
        continue
    if not path.exists():
        print(f"{path}: missing")
        problems += 1
        continue
    seen = Counter()
    persons = Counter()
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        loc = f"{path.name}:{ln}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"{loc}: bad JSON: {e}")
            problems += 1
            continue
        if set(r) != {"emotion", "topic", "person", "text"}:
            print(f"{loc}: keys must be emotion, topic, person, text; got {sorted(r)}")
            problems += 1
        if r.get("emotion") != name:
            print(f"{loc}: emotion {r.get('emotion')!r} != {name!r}")
            problems += 1
        if r.get("topic") not in topics:
            print(f"{loc}: unknown topic {r.get('topic')!r}")
            problems += 1
        if r.get("person") not in ("first", "third"):
            print(f"{loc}: person must be 'first' or 'third'")
            problems += 1
        seen[r.get("topic")] += 1
        persons[r.get("person")] += 1
        n = len(checks.words(r.get("text", "")))
        if not checks.MIN_WORDS <= n <= checks.MAX_WORDS:
            print(f"{loc}: {n} words (want {checks.MIN_WORDS}-{checks.MAX_WORDS})")
            problems += 1
        hits = checks.forbidden_hits(r.get("text", ""), emotions[name]["forbidden"])
        if hits:
            print(f"{loc}: forbidden words {hits}")
            problems += 1
    dup = [t for t, c in seen.items() if c > 1]
    if dup:
        print(f"{name}: topics used twice {dup}")
        problems += 1
    if len(seen) < 16:
        print(f"{name}: only {len(seen)} distinct topics (want >= 16)")
        problems += 1
    print(f"{name}: {sum(seen.values())} stories, {len(seen)} topics, persons {dict(persons)}")
for i, j, g in checks.shared_runs(all_texts):
    if any(where[k].startswith(tuple(f"{w}.jsonl" for w in wanted)) for k in (i, j)):
        print(f"shared 8-word run between {where[i]} and {where[j]}: '{g}'")
        problems += 1
print("OK" if not problems else f"{problems} problem(s)")
sys.exit(1 if problems else 0)
