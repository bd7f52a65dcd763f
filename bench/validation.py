"""Per-body cost of parsing, the compiled fast path and the xmlschema reference, for every sample.

Run: python bench/validation.py [--json PATH] [--repeat N] [NAME ...]

Prints a Markdown table of median microseconds per body. libxml2's validator
(lxml.etree.XMLSchema) is not measured: it only speaks XSD 1.0, and cos-callback.xsd needs 1.1
(xs:all with repeatable elements, wildcards next to declared siblings, assertions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lxml import etree

from relay.validate.jsontree import json_to_tree
from relay.validate.schema import CallbackSchema

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "samples"


@dataclass(frozen=True)
class Timing:
    median_us: float
    min_us: float


@dataclass(frozen=True)
class Row:
    body: str
    size: int
    parse: Timing
    convert: Timing
    reference: Timing

    @property
    def speedup(self) -> float:
        return self.reference.median_us / self.convert.median_us


def hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def timing(action: Callable[[], object], repeat: int) -> Timing:
    """Median and best of `repeat` runs, each long enough (autorange, >= 0.2 s) to swamp timer noise.

    CPU time of this process, not wall time, so time spent descheduled on a shared machine is not
    billed to the body. The minimum is the least disturbed run; the median is the headline.
    """
    timer = timeit.Timer(action, timer=time.process_time)
    number, _ = timer.autorange()
    runs = [total / number * 1e6 for total in timer.repeat(repeat=repeat, number=number)]
    return Timing(median_us=statistics.median(runs), min_us=min(runs))


def measure(path: Path, schema: CallbackSchema, repeat: int) -> Row:
    body = path.read_bytes()
    parse: Callable[[], etree._Element]
    if path.suffix == ".json":

        def parse() -> etree._Element:
            return json_to_tree(json.loads(body))
    else:
        parser = hardened_parser()

        def parse() -> etree._Element:
            return etree.fromstring(body, parser)

    root = parse()
    schema.convert(root)  # fail early on a sample that does not validate
    return Row(
        body=str(path.relative_to(SAMPLES)),
        size=len(body),
        parse=timing(parse, repeat),
        convert=timing(lambda: schema.convert(root), repeat),
        reference=timing(lambda: schema.reference_is_valid(root), repeat),
    )


def table(rows: list[Row]) -> str:
    lines = [
        "Median µs per body (min in parentheses).",
        "",
        "| body | bytes | parse | convert() (fast path) | xmlschema (slow path) | slow / fast |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.body} | {row.size} | {row.parse.median_us:.1f} ({row.parse.min_us:.1f}) | "
            f"{row.convert.median_us:.1f} ({row.convert.min_us:.1f}) | "
            f"{row.reference.median_us:.0f} ({row.reference.min_us:.0f}) | {row.speedup:.0f}x |"
        )
    lines.append("")
    lines.append(
        "parse: hardened lxml parser (JSON bodies: json.loads + json_to_tree). "
        "libxml2 XSD validation (lxml.etree.XMLSchema): not applicable, it only implements XSD 1.0."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    options.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    options.add_argument("--repeat", type=int, default=7, help="timed runs per measurement (median)")
    options.add_argument("only", nargs="*", help="measure only bodies whose path contains one of these")
    args = options.parse_args(argv)

    schema = CallbackSchema.load()
    paths = sorted(SAMPLES.glob("*.xml")) + sorted(SAMPLES.glob("extra/*.xml")) + sorted(SAMPLES.glob("json/*.json"))
    if args.only:
        paths = [path for path in paths if any(part in str(path) for part in args.only)]
    rows = [measure(path, schema, args.repeat) for path in paths]
    print(table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
