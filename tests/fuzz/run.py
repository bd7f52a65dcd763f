"""Coverage-guided fuzzing of parse + schema + model: ``python -m tests.fuzz.run --inputs N``.

Uses atheris (libFuzzer) when it is installed, instrumenting the ``relay`` package so that inputs reaching
new code are kept and mutated further; otherwise a plain random-mutation loop over the same seeds. Either
way, any exception other than a Rejected refusal stops the run with exit status 1 and the input
saved under --work. On success it writes the figures (inputs/s, peak RSS, outcomes) to --results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent.parent / "chaos" / "results" / "fuzz_coverage_guided.json"
#: Largest input libFuzzer builds; the samples are all smaller.
MAX_LEN = 16384


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Run:
    """Counts inputs and outcomes, samples memory, and writes the figures when the count is reached."""

    def __init__(self, engine: str, inputs: int, seed: int, results: Path) -> None:
        self.engine = engine
        self.inputs = inputs
        self.seed = seed
        self.results = results
        self.count = 0
        self.outcomes: Counter[str] = Counter()
        self.rss_samples: list[float] = []
        self.started = time.monotonic()

    def done(self, outcome: str) -> bool:
        self.count += 1
        self.outcomes[outcome] += 1
        if self.count % max(1, self.inputs // 20) == 0:
            self.rss_samples.append(round(rss_mib(), 1))
        return self.count >= self.inputs

    def finish(self) -> None:
        seconds = time.monotonic() - self.started
        figures: dict[str, Any] = {
            "engine": self.engine,
            "inputs": self.count,
            "seconds": round(seconds, 1),
            "inputs_per_second": round(self.count / seconds),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_mib_every_5_percent": self.rss_samples,
            "outcomes": dict(self.outcomes.most_common()),
            "unexpected": 0,
            "seed": self.seed,
        }
        self.results.parent.mkdir(parents=True, exist_ok=True)
        self.results.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"fuzzed {self.count} inputs: {json.dumps(figures)}", flush=True)


def dictionary(seeds: list[bytes], work: Path) -> Path:
    """libFuzzer tokens: every element name of the samples as XML tags and JSON keys, and their states."""
    from lxml import etree

    tokens: set[str] = {"<![CDATA[", "]]>", "<!--", "-->", "&amp;", "&#0;", "\\u0000", "null", "true", "[]", "{}"}
    for seed in seeds:
        if seed.lstrip().startswith(b"<"):
            for element in etree.fromstring(seed).iter(tag=etree.Element):
                tokens |= {f"<{element.tag}>", f"</{element.tag}>", f'"{element.tag}":'}
                if element.text and len(element.text) < 32:
                    tokens.add(element.text)
    path = work / "tokens.dict"
    lines = []
    for token in sorted(tokens):
        escaped = "".join(
            f"\\x{byte:02x}" if byte < 32 or byte > 126 or byte in b'"\\' else chr(byte) for byte in token.encode()
        )
        lines.append(f'"{escaped}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def with_atheris(inputs: int, seed: int, work: Path, results: Path) -> int:
    atheris: Any = importlib.import_module("atheris")  # untyped, and optional

    with atheris.instrument_imports(include=["relay"]):
        from tests.fuzz import target
    from tests.fuzz.mutate import Vocabulary, structured

    run = Run("atheris (libFuzzer, relay instrumented, structure-aware mutator)", inputs, seed, results)
    corpus = work / "corpus"
    corpus.mkdir(exist_ok=True)
    seeds = target.seeds()
    for number, body in enumerate(seeds):
        (corpus / f"seed-{number:03d}").write_bytes(body)
    words = Vocabulary(seeds)

    def mutator(data: bytes, max_size: int, mutation_seed: int) -> bytes:
        """Half the time a well-formed change (reaches the schema and model), else libFuzzer's own."""
        rng = random.Random(mutation_seed)
        if rng.random() < 0.5:
            changed = structured(data, words, rng)
            if changed is not None and len(changed) <= max_size:
                return changed
        return bytes(atheris.Mutate(data, max_size))

    def one(data: bytes) -> None:
        if run.done(target.exercise(data)):  # anything unexpected propagates: libFuzzer reports and saves it
            run.finish()
            os._exit(0)

    options = [
        f"-runs={inputs * 2}",  # a ceiling only: `one` ends the run at exactly `inputs`
        f"-max_len={MAX_LEN}",
        "-rss_limit_mb=2048",
        "-timeout=30",
        f"-seed={seed}",
        f"-dict={dictionary(seeds, work)}",
        f"-artifact_prefix={work}/",
        "-print_final_stats=1",
    ]
    atheris.Setup([sys.argv[0], *options, str(corpus)], one, custom_mutator=mutator)
    atheris.Fuzz()
    return 1  # libFuzzer stopped before the count (its own limits): not a pass


def mutate(body: bytes, other: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 6)):
        at = rng.randint(0, len(data))
        kind = rng.randrange(6)
        if kind == 0:
            del data[at : at + rng.randint(1, 16)]
        elif kind == 1:
            data[at:at] = data[at : at + rng.randint(1, 64)]
        elif kind == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3 and data:
            data[at % len(data)] ^= 1 << rng.randrange(8)
        elif kind == 4:
            data[at:] = other[rng.randint(0, len(other)) :]
        else:
            data[at : at + 4] = rng.choice([b"<", b">", b"&", b"\x00", b"\xff", b'"', b"{", b"]", b"-", b"9999"])
    return bytes(data[:MAX_LEN])


def with_mutation(inputs: int, seed: int, work: Path, results: Path) -> int:
    from tests.fuzz import target
    from tests.fuzz.mutate import Vocabulary, structured

    run = Run("random mutation (atheris not installed), half structure-aware", inputs, seed, results)
    rng = random.Random(seed)
    seeds = target.seeds()
    words = Vocabulary(seeds)
    for _ in range(inputs):
        start = rng.choice(seeds)
        body = (structured(start, words, rng) if rng.random() < 0.5 else None) or mutate(start, rng.choice(seeds), rng)
        try:
            outcome = target.exercise(body)
        except Exception:
            crash = work / f"crash-{run.count}"
            crash.write_bytes(body)
            traceback.print_exc()
            print(f"unexpected exception; input saved to {crash}", file=sys.stderr)
            return 1
        if run.done(outcome):
            break
    run.finish()
    return 0


ENGINES: dict[str, Callable[[int, int, Path, Path], int]] = {"atheris": with_atheris, "mutation": with_mutation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=20_000, help="how many inputs to run (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--engine", choices=["auto", *ENGINES], default="auto")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"figures file (default {RESULTS})")
    parser.add_argument("--work", type=Path, help="corpus and crash files (default: a temporary folder)")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") is not None else "mutation"
    with tempfile.TemporaryDirectory(prefix="cos-relay-fuzz-") as scratch:
        work: Path = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        return ENGINES[engine](args.inputs, args.seed, work, args.results)


if __name__ == "__main__":
    sys.exit(main())
