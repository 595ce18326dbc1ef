"""Per-module figures of the last `mutmut run`, and with ``--list`` every mutant left alive (docs/mutation.md).

Run from the repo root after `mutmut run`: ``python -m tests.mutation_summary [--list]``.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

COLUMNS = ["killed", "survived", "no tests", "timeout", "suspicious", "segfault", "not checked", "skipped"]
ALIVE = ("survived", "no tests")


def results(mutmut: str) -> list[tuple[str, str]]:
    """(mutant name, status) for every mutant mutmut generated."""
    out = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    pairs = [line.strip().rpartition(": ") for line in out.splitlines()]
    return [(name, status) for name, sep, status in pairs if sep and name.startswith("bulkdl.")]


def table(pairs: list[tuple[str, str]]) -> list[str]:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, status in pairs:
        counts[name.split(".x", 1)[0]][status] += 1
    rows = [
        "| module | generated | " + " | ".join(COLUMNS) + " | score (killed / tested) | killed / generated |",
        "|---|---:|" + "---:|" * len(COLUMNS) + "---:|---:|",
    ]
    for module, c in sorted(counts.items()):
        total = sum(c.values())
        tested = sum(c[k] for k in ("killed", "survived", "timeout", "suspicious", "segfault"))
        score = f"{100 * (c['killed'] + c['timeout']) / tested:.1f}%" if tested else "n/a"
        cells = " | ".join(str(c[k]) for k in COLUMNS)
        rows.append(f"| {module} | {total} | {cells} | {score} | {100 * c['killed'] / total:.1f}% |")
    if other := sorted({s for c in counts.values() for s in c} - set(COLUMNS)):
        rows.append(f"other statuses: {other}")
    return rows


def where(mutmut: str, name: str) -> str:
    """``file:line | original → mutated``: the diff is of the function alone, so find its lines in the file."""
    diff = subprocess.run([mutmut, "show", name], capture_output=True, text=True, check=True).stdout.splitlines()
    body = [d for d in diff if d[:1] in " -+" and not d.startswith(("---", "+++"))]
    minus = next((d[1:] for d in body if d.startswith("-")), "")
    plus = next((d[1:] for d in body if d.startswith("+")), "")
    path = Path(*name.split(".x", 1)[0].split(".")).with_suffix(".py")
    source = path.read_text().splitlines()
    first = next((i for i, text in enumerate(source) if body and text.strip() == body[0][1:].strip()), 0)
    line = next((i for i in range(first, len(source)) if source[i].strip() == minus.strip()), first)
    return f"{path}:{line + 1} | `{minus.strip()}` → `{plus.strip()}`"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list", action="store_true", help="also list the survivors and untested mutants")
    parser.add_argument("--mutmut", default=str(Path(sys.executable).parent / "mutmut"))
    args = parser.parse_args(argv)
    pairs = results(args.mutmut)
    print("\n".join(table(pairs)))
    if args.list:
        for name, status in pairs:
            if status in ALIVE:
                print(f"{where(args.mutmut, name)} | {status} | {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
