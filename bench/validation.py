"""Per-body cost of parsing, the compiled fast path and the xmlschema reference, for every sample.

Run: python bench/validation.py [--json PATH] [--repeat N]

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
class Row:
    body: str
    size: int
    parse_us: float
    convert_us: float
    reference_us: float

    @property
    def speedup(self) -> float:
        return self.reference_us / self.convert_us


def hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def median_us(action: Callable[[], object], repeat: int) -> float:
    """Median over `repeat` runs, each long enough (autorange, >= 0.2 s) to swamp timer noise.

    CPU time of this process, not wall time: on a shared machine, time spent descheduled would
    otherwise be billed to whatever was running.
    """
    timer = timeit.Timer(action, timer=time.process_time)
    number, _ = timer.autorange()
    runs = timer.repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


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
        parse_us=median_us(parse, repeat),
        convert_us=median_us(lambda: schema.convert(root), repeat),
        reference_us=median_us(lambda: schema.reference_is_valid(root), repeat),
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| body | bytes | parse µs | convert() µs (fast) | xmlschema µs (slow) | slow / fast |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.body} | {row.size} | {row.parse_us:.1f} | {row.convert_us:.1f} | "
            f"{row.reference_us:.0f} | {row.speedup:.0f}x |"
        )
    lines.append("")
    lines.append(
        "Parse: hardened lxml parser (JSON: json.loads + json_to_tree). "
        "libxml2 XSD validation (lxml.etree.XMLSchema): not applicable, XSD 1.0 only."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    options.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    options.add_argument("--repeat", type=int, default=7, help="timed runs per measurement (median)")
    args = options.parse_args(argv)

    schema = CallbackSchema.load()
    paths = sorted(SAMPLES.glob("*.xml")) + sorted(SAMPLES.glob("extra/*.xml")) + sorted(SAMPLES.glob("json/*.json"))
    rows = [measure(path, schema, args.repeat) for path in paths]
    print(table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
