"""The suite's Markdown report (docs/benchmarks.md) and its verdicts against the issue's targets."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MB = 1e6
MIB = 2**20


def emit(result: Any, path: Path | None) -> None:
    """A section's result (a dataclass) as JSON: printed, and written to ``path`` when one is given."""
    text = json.dumps(asdict(result), indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")


@dataclass(frozen=True)
class Verdict:
    measure: str
    target: str
    measured: str
    met: bool | None  # None: not measured


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True)
class Row:
    """One row of issue 26's targets on one backend, and the command that measures it alone."""

    figure: str
    backend: str
    target: str
    measured: str
    met: bool | None  # None: not measured
    command: str


#: Each backend's name, and the suffix of its sections' names.
BACKENDS = (("SQLite", ""), ("PostgreSQL", "_pg"))


def issue_26(sections: dict[str, Any]) -> list[Row]:
    """Issue 26's rows, each on SQLite and on PostgreSQL (the ``_pg`` sections)."""
    return [row for backend, suffix in BACKENDS for row in _issue_26_on(sections, backend, suffix)]


def _issue_26_on(sections: dict[str, Any], backend: str, suffix: str) -> list[Row]:
    rows: list[Row] = []
    postgres = " --postgres" if suffix else ""

    def add(figure: str, target: str, measured: str | None, met: bool, command: str) -> None:
        shown = "not measured" if measured is None else measured
        rows.append(Row(figure, backend, target, shown, met if measured is not None else None, command))

    cpu = {step["server"]: step["cpu_us"] for step in _get(sections, f"floor{suffix}", "steps") or []}
    # The gateway's step: cos-relay, or on PostgreSQL its CPU with the server's, against the rung committing to SQLite.
    relay = next((value for server, value in cpu.items() if server.startswith("cos-relay")), None)
    floor = cpu.get("parse-commit")
    ladder = None
    if relay is not None and floor:
        ladder = f"{relay / floor:.2f}x ({relay:,.0f} / {floor:,.0f} µs CPU per callback)"
        if suffix:
            ladder += "; the gateway and the PostgreSQL server against the SQLite rung"
    add(
        "ingest CPU per callback / the parse + commit floor (the ladder)",
        "<= 2.0x",
        ladder,
        relay is not None and bool(floor) and relay / floor <= 2.0,
        f"python -m bench.floor --rounds 3{postgres}",
    )
    drain = _get(sections, f"delivery{suffix}")
    add(
        "delivery drain / raw aiohttp loop, same sink",
        ">= 0.6",
        None
        if drain is None
        else f"{drain['ratio']:.2f} ({drain['relay_per_second']:,.0f} against {drain['raw_per_second']:,.0f}/s)",
        drain is not None and drain["ratio"] >= 0.6,
        f"python -m bench.delivery --events {10_000 if suffix else 20_000} --rounds 3{postgres}",
    )
    fan = _get(sections, f"fanout{suffix}")
    for label, phase in (("all paused (backlogs growing)", "backlog"), ("keeping up", "kept_up")):
        ack = fan[phase][0] if fan and fan[phase] else None
        add(
            f"ack p99, 1,000 matching subscribers, {label}",
            "<= 10 ms",
            None
            if ack is None
            else f"{ack['p99_ms']:.1f} ms (p50 {ack['p50_ms']:.1f}; bare p99 {fan['bare']['p99_ms']:.1f};"
            f" {ack['subscribers']:,} subscribers, {ack['requests']} callbacks)",
            ack is not None and ack["p99_ms"] <= 10,
            f"python -m bench.fanout --levels 1000 --requests 100 --scrapes 0{postgres}",
        )
    stored = _get(sections, f"disk{suffix}")
    add(
        "bytes stored per callback with 100 matching subscribers / body",
        "<= 2.0",
        None
        if stored is None
        else f"{stored['ratio']:.2f} ({stored['bytes_per_callback']:,.0f} bytes per"
        f" {stored['body_bytes']:,.0f}-byte body; {stored['subscribers']} paused subscribers,"
        f" {stored['callbacks']} callbacks)",
        stored is not None and stored["ratio"] <= 2.0,
        "python -m bench.disk --parts 3 --callbacks 100",
    )
    load = _get(sections, f"fairness{suffix}")
    add(
        "delivered during saturated ingest (one subscriber)",
        ">= 90%",
        None
        if load is None
        else f"{load['share']:.0%} ({load['delivered_during']:,} of {load['accepted']:,} at"
        f" {load['requests_per_second']:,.0f} callbacks/s)",
        load is not None and load["share"] >= 0.9,
        f"python -m bench.fairness --seconds 6{postgres}",
    )
    return rows


def verdicts(sections: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []

    def add(measure: str, target: str, value: float | None, fmt: str, ok: bool | None) -> None:
        shown = "not measured" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt
        out.append(Verdict(measure, target, shown, ok if value is not None else None))

    ratio = _get(sections, "ingest", "ratio_1_worker")
    add("ingest, 1 worker: cos-relay / bare req/s", ">= 0.25", ratio, f"{ratio or 0:.2f}", (ratio or 0) >= 0.25)
    p99 = _get(sections, "ingest", "fixed_rate", "relay", "p99_ms")
    bare = _get(sections, "ingest", "fixed_rate", "bare", "p99_ms") or math.nan
    rate = _get(sections, "ingest", "fixed_rate", "relay", "offered_per_second") or 0
    shown = f"{p99 or 0:.1f} ms (bare: {bare:.1f})"
    add(f"p99 ack at half capacity ({rate:,.0f} req/s)", "<= 10 ms", p99, shown, (p99 or 0) <= 10)
    ratio = _get(sections, "delivery", "ratio")
    add("delivery: cos-relay drain / raw aiohttp loop", ">= 0.5", ratio, f"{ratio or 0:.2f}", (ratio or 0) >= 0.5)
    share = _get(sections, "fairness", "share")
    shown = f"{share or 0:.0%} of callbacks accepted"
    add("events delivered during saturated ingest, 1 subscriber", ">= 50%", share, shown, (share or 0) >= 0.5)
    drain = _get(sections, "fairness", "drain_seconds")
    ok = None if "fairness" not in sections else drain is not None and drain <= 2
    add("backlog gone after the load stops", "<= 2 s", drain if ok is not None else None, f"{drain or 0:.2f} s", ok)
    rate = _get(sections, "e2e", "rate") or 0
    p50 = _get(sections, "e2e", "p50_ms")
    bare = _get(sections, "e2e", "baseline", "p50_ms") or math.nan
    shown = f"{p50 or 0:.1f} ms (baseline: {bare:.1f})"
    add(f"end-to-end p50 at {rate:,.0f}/s", "<= 5 ms", p50, shown, (p50 or 0) <= 5)
    p99 = _get(sections, "e2e", "p99_ms")
    bare = _get(sections, "e2e", "baseline", "p99_ms") or math.nan
    shown = f"{p99 or 0:.1f} ms (baseline: {bare:.1f})"
    add(f"end-to-end p99 at {rate:,.0f}/s", "<= 25 ms", p99, shown, (p99 or 0) <= 25)
    target = _get(sections, "memory", "full", "callbacks") or 0
    peak = _get(sections, "memory", "peak_rss_mib")
    add(
        f"peak RSS, {target:,} callbacks, 1 subscriber",
        "< 150 MB",
        peak,
        f"{(peak or 0) * MIB / MB:.0f} MB",
        (peak or 0) * MIB < 150 * MB,
    )
    growth = _get(sections, "memory", "growth")
    half = _get(sections, "memory", "half", "callbacks") or 0
    add(f"RSS growth {half:,} -> {target:,}", "< 10%", growth, f"{(growth or 0):+.1%}", (growth or 0) < 0.10)
    stored = _get(sections, "memory", "bytes_per_callback")
    body = _get(sections, "memory", "body_bytes") or 1
    shown = f"{(stored or 0) / 1000:.1f} KB per {body / 1000:.1f} KB body ({(stored or 0) / body:.2f}x)"
    add("stored per callback, 1 subscriber", "<= 1.5x the body", stored, shown, (stored or 0) <= 1.5 * body)
    jobs = _get(sections, "history", "jobs") or 0
    ratio = _get(sections, "history", "ingest_ratio")
    add(f"ingest with {jobs:,} jobs of history / empty", ">= 0.9", ratio, f"{ratio or 0:.2f}", (ratio or 0) >= 0.9)
    ratio = _get(sections, "history", "claim_ratio")
    add(
        f"claim_due p50 with {jobs:,} jobs of history / empty",
        "flat (<= 1.25)",
        ratio,
        f"{ratio or 0:.2f}",
        (ratio or 0) <= 1.25,
    )
    out += [
        Verdict(f"issue 26: {row.figure}, {row.backend}", row.target, row.measured, row.met)
        for row in issue_26(sections)
    ]
    return out


def _met(met: bool | None) -> str:
    """A verdict as the report's tables show it (None: not measured)."""
    return {True: "yes", False: "**no**", None: "-"}[met]


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _machine(machine: dict[str, Any]) -> list[str]:
    libraries = ", ".join(f"{name} {version}" for name, version in machine["libraries"].items() if version)
    sqlite = machine["sqlite"]
    load = ", ".join(f"{value:.2f}" for value in machine["load_average_at_start"])
    return [
        "| | |",
        "| --- | --- |",
        f"| CPU | {machine['cpu']}, {machine['cores']} cores |",
        f"| memory | {machine['memory_mib'] or 0:,.0f} MiB |",
        f"| kernel | Linux {machine['kernel']} |",
        f"| Python | {machine['python']} |",
        f"| libraries | {libraries} |",
        f"| SQLite | {sqlite['version']}: journal_mode={sqlite['journal_mode']}, synchronous={sqlite['synchronous']}"
        f" (default durability), page_size={sqlite['page_size']}, cache_size={sqlite['cache_size']},"
        f" foreign_keys={'on' if sqlite['foreign_keys'] else 'off'} |",
        f"| load generator | {machine['wrk'] or 'no wrk: the Python generator (bench/load.py)'} |",
        f"| load average at start | {load} (other work shares this machine) |",
        f"| revision | {machine['git']}{' with uncommitted changes in relay/' if machine['relay_modified'] else ''} |",
    ]


def _ingest(ingest: dict[str, Any]) -> list[str]:
    config = ingest["config"]
    bare = {row["variant"]: row["requests_per_second"] for row in ingest["variants"]}
    lines = [
        f"{config['rounds']} round(s) per variant, each a fresh server (and database) with {config['warmup']:g} s"
        f" warm-up, then {config['seconds']:g} s of {ingest['tool']} over {config['connections']} connections;"
        " rounds alternate the order (A..E, E..A). Figures are medians over rounds.",
        "",
        "| server | req/s | p50 ms | p99 ms | max ms | / bare | non-200 | duplicates | other load (cores, max) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in ingest["variants"]:
        baseline = bare["bare, 2 workers"] if "2 workers" in row["variant"] else bare["bare, 1 worker"]
        lines.append(
            f"| {row['variant']} | {row['requests_per_second']:,.0f} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} |"
            f" {_ms(row['max_ms'])} | {row['requests_per_second'] / baseline:.2f} | {row['refused'] + row['errors']} |"
            f" {row['duplicate']} | {_cores(row.get('other_cores'))} |"
        )
    lines += [
        "",
        "Each run (req/s, other load):",
        "",
        *(
            f"* {row['variant']}: "
            + ", ".join(f"{run['requests_per_second']:,.0f} ({_cores(run.get('other_cores'))})" for run in row["runs"])
            for row in ingest["variants"]
        ),
    ]
    fixed = ingest["fixed_rate"]
    if fixed:
        some = next(iter(fixed.values()))
        lines += [
            "",
            f"Fixed rate, half the gateway's capacity: {some['offered_per_second']:,.0f} req/s for"
            f" {config['fixed_seconds']:g} s (latency from each request's scheduled time):",
            "",
            "| server | requests | p50 ms | p90 ms | p99 ms | max ms | other load (cores) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name in ("bare", "relay"):
            if name in fixed:
                run = fixed[name]
                label = "bare, 1 worker" if name == "bare" else "cos-relay, 1 worker"
                lines.append(
                    f"| {label} | {run['requests']:,} | {_ms(run['p50_ms'])} | {_ms(run['p90_ms'])} |"
                    f" {_ms(run['p99_ms'])} | {_ms(run['max_ms'])} | {_cores(run.get('other_cores'))} |"
                )
    return lines


def delivery_table(result: dict[str, Any]) -> list[str]:
    """The Markdown table of one result (as JSON: the suite's report renders the same)."""
    signed = result.get("signed_per_second") or 0.0
    return [
        "| | req/s | / raw loop | CPU µs per request |",
        "| --- | ---: | ---: | ---: |",
        f"| raw aiohttp loop | {result['raw_per_second']:,.0f} | 1.00 | {result['raw_cpu_us']:.0f} |",
        f"| signed sends, no store (the floor) | {signed:,.0f} | {signed / result['raw_per_second']:.2f} |"
        f" {result.get('signed_cpu_us') or 0:.0f} |",
        f"| cos-relay drain | {result['relay_per_second']:,.0f} | {result['ratio']:.2f} |"
        f" {result['relay_cpu_us']:.0f} |",
        "",
        f"{result['events']:,} events, {result['concurrency']} in flight.{_rounds(result.get('ratios') or ())}",
    ]


def _rounds(ratios: Sequence[float]) -> str:
    """How many rounds the table is the median of, and each round's ratio (one round: nothing to say)."""
    if len(ratios) < 2:
        return ""
    return f" The median of {len(ratios)} rounds; drain / raw loop in each: {', '.join(f'{r:.2f}' for r in ratios)}."


#: What each server of the ingest ladder does per callback.
FLOOR_DOES = {
    "bare": "reads the body, answers 200",
    "parse": "+ the hardened parse",
    "validate": "+ validation, conversion, the callback model",
    "commit": "bare + the raw body group-committed to SQLite",
    "parse-commit": "parse + the raw body committed",
    "validate-commit": "validate + the raw body committed",
    "cos-relay": "`cos-relay serve`: all of it, jobs, events, dedup, metrics",
    "cos-relay on PostgreSQL": "the same on PostgreSQL; CPU: the gateway's and the PostgreSQL server's",
}


def floor_table(report: dict[str, Any]) -> list[str]:
    """The Markdown table of a report (as JSON: the suite's report renders the same)."""
    config = report["config"]
    lines = [
        f"{config['rounds']} round(s), each server fresh, {config['seconds']:g} s of load over"
        f" {config['connections']} connections after {config['warmup']:g} s of warm-up; medians over rounds."
        " CPU: the server's, all threads, per request.",
        "",
        "| server | does | req/s | / bare | CPU µs per request | p99 ms | non-200 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step in report["steps"]:
        lines.append(
            f"| {step['server']} | {FLOOR_DOES.get(step['server'], '')} | {step['requests_per_second']:,.0f} |"
            f" {step['ratio']:.2f} | {step['cpu_us']:.0f} | {step['p99_ms']:.1f} | {step['refused']} |"
        )
    return lines


def fairness_table(result: dict[str, Any]) -> list[str]:
    lags = result["lag_seconds"] or [0.0]
    drain = result["drain_seconds"]
    return [
        "| connections | seconds | callbacks/s | accepted | delivered during | share | outbox lag each second (s)"
        " | backlog gone after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        f"| {result['connections']} | {result['seconds']:.1f} | {result['requests_per_second']:,.0f} |"
        f" {result['accepted']:,} | {result['delivered_during']:,} | {result['share']:.0%} |"
        f" {', '.join(f'{lag:.2f}' for lag in lags)} |"
        f" {'not within the limit' if drain is None else f'{drain:.2f} s'} |",
    ]


def _e2e(e2e: dict[str, Any]) -> list[str]:
    ack, base = e2e["ack"], e2e["baseline"]
    base_ack = base["ack"]

    def row(label: str, stats: dict[str, Any]) -> str:
        return (
            f"| {label} | {_ms(stats['p50_ms'])} | {_ms(stats['p90_ms'])} | {_ms(stats['p99_ms'])} |"
            f" {_ms(stats['max_ms'])} |"
        )

    return [
        f"{e2e['rate']:g} callbacks/s for {e2e['seconds']:g} s; {e2e['received']:,} of {e2e['sent']:,} events"
        f" received ({e2e['duplicates']} duplicates). Baseline: bench/bare.py --forward (answers 200, then posts"
        f" the JobId to the same sink), {base['seconds']:.3g} s before and {base['seconds']:.3g} s after the gateway at"
        f" the same rate; {base['received']:,} of {base['sent']:,} received. Other load during the gateway's run:"
        f" {_cores(ack.get('other_cores'))} cores.",
        "",
        "| from sending the callback to | p50 ms | p90 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        row("cos-relay: its 200 (ack)", ack),
        row("cos-relay: the subscriber receiving the event", e2e),
        *(row(f"baseline {when}: its 200", run) for when, run in zip(("before", "after"), base_ack, strict=False)),
        row("baseline: the subscriber receiving it", base),
    ]


def _fanout(fanout: dict[str, Any]) -> list[str]:
    lines = [
        "Callbacks one at a time on one keep-alive connection, each a new job matching every subscriber. Kept up: each"
        " callback's deliveries all reached the sink before the next was posted. Paused: every subscriber paused, each"
        " callback adds to every backlog.",
        "",
        "| | subscribers | callbacks | p50 ms | p99 ms | max ms | non-200 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    phases = [("bare endpoint", fanout["bare"])]
    phases += [("kept up", ack) for ack in fanout["kept_up"]] + [("paused", ack) for ack in fanout["backlog"]]
    for label, ack in phases:
        lines.append(
            f"| {label} | {ack['subscribers']:,} | {ack['requests']} | {_ms(ack['p50_ms'])} | {_ms(ack['p99_ms'])} |"
            f" {_ms(ack['max_ms'])} | {ack['refused']} |"
        )
    return lines


def _disk(stored: dict[str, Any]) -> list[str]:
    tables = sorted(stored["tables"].items(), key=lambda item: -item[1])
    return [
        f"{stored['callbacks']} callbacks (the samples, each a new job) of {stored['body_bytes']:,.0f} bytes on"
        f" average, {stored['subscribers']} paused subscribers matching every one:"
        f" {stored['bytes_per_callback']:,.0f} bytes stored per callback, {stored['ratio']:.2f}x the body. Each table"
        " with its indexes, per callback:",
        "",
        "| table | bytes |",
        "| --- | ---: |",
        *(f"| {table} | {size:,.0f} |" for table, size in tables if size),
    ]


def _memory(memory: dict[str, Any]) -> list[str]:
    lines = []
    if memory.get("note"):
        lines += [f"**{memory['note']}**", ""]
    lines += [
        f"{memory['connections']} connections, one subscriber (the sink), {memory['requests_per_second']:,.0f} req/s.",
        "",
        "| point | accepted callbacks | delivered | RSS MiB | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (("after warm-up", "reference"), ("half", "half"), ("end", "full")):
        point = memory[key]
        lines.append(
            f"| {label} | {point['callbacks']:,} | {point['delivered']:,} | {point['rss_mib']:.1f} |"
            f" {point['peak_rss_mib']:.1f} |"
        )
    end = memory["full"]
    lines += [
        "",
        f"Growth from half to end: {memory['growth']:+.1%}. Stored per callback from half to end (the database's"
        f" pages, WAL included): {memory['bytes_per_callback'] / 1000:.1f} KB for a {memory['body_bytes'] / 1000:.1f}"
        " KB body. The subscriber got"
        f" {end['delivered'] / max(end['seconds'], 1e-9):,.0f} events/s while callbacks came in at"
        f" {memory['requests_per_second']:,.0f}/s: {end['callbacks'] - end['delivered']:,} events were still"
        " queued (in SQLite) at the end.",
    ]
    return lines


def _history(history: dict[str, Any]) -> list[str]:
    lines = [
        f"{history['jobs']:,} jobs with their callbacks, items, states, events, delivered deliveries and attempts,"
        f" generated in {history['generate_seconds']:.0f} s ({history['file_mib']:,.0f} MiB).",
        "",
        f"{len(history['ingest_empty'])} ingest runs of {history['ingest_empty'][0]['seconds']:.0f} s per database,"
        " alternating (empty, history, history, empty, ...) between two running gateways, each run followed by"
        " its gateway relaying everything; means over runs (p99: median).",
        "",
        "| database | ingest req/s (1 worker, 1 subscriber) | p99 ms | other load (cores, median) |"
        " claim_due p50 / p99 µs | claim one p50 / p99 µs | next_due p50 µs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("empty", "history"):
        runs = history[f"ingest_{name}"]
        p99 = statistics.median(run["p99_ms"] for run in runs)
        claim = history[f"claim_{name}"]
        others = [run["other_cores"] for run in runs if run.get("other_cores") is not None]
        other = _cores(statistics.median(others) if others else None)
        lines.append(
            f"| {name} | {history[f'{name}_per_second']:,.0f} | {p99:.1f} | {other} |"
            f" {claim['claim']['p50_us']:.0f} / {claim['claim']['p99_us']:.0f} |"
            f" {claim['claim_one']['p50_us']:.0f} / {claim['claim_one']['p99_us']:.0f} |"
            f" {claim['next_due']['p50_us']:.0f} |"
        )
    lines += [
        "",
        f"History / empty: ingest {history['ingest_ratio']:.2f}, claim_due p50 {history['claim_ratio']:.2f},"
        f" single-subscriber claim p50 {history['claim_one_ratio']:.2f}. Each claim leased"
        f" {history['claim_history']['claimed']} deliveries (the subscriber's in-flight limit) out of 1,000 pending.",
    ]
    return lines


def markdown(results: dict[str, Any]) -> str:
    sections = results["sections"]
    mode = "a smoke run: tiny sizes, the figures mean nothing" if results["smoke"] else "the full suite"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{results['command']}` ({mode}) on {results['started_at']}, in"
        f" {results['seconds'] / 60:.1f} min. Every figure compares cos-relay with a baseline measured in the"
        " same run, on the same machine; absolute numbers depend on the machine and on what else runs on it."
        " Where the time goes, and what the missed targets would take: [performance.md](performance.md).",
        "",
        "## Against the targets",
        "",
        "| measure | target | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for verdict in verdicts(sections):
        lines.append(f"| {verdict.measure} | {verdict.target} | {verdict.measured} | {_met(verdict.met)} |")
    lines += [
        "",
        "## Issue 26 targets",
        "",
        "Each row on each backend (PostgreSQL: the `_pg` sections, on a throwaway PostgreSQL 15 cluster,"
        " tests/postgres.py, fsync off). Ratios are against a baseline measured in the same run. The last column"
        " measures the row alone: `bench.disk` both backends at once (the row is its last case), the others one"
        " backend (`--postgres`). On PostgreSQL there is no ladder rung that commits to PostgreSQL: the ingest row"
        " holds the gateway's CPU with the PostgreSQL server's against the parse + commit rung on SQLite.",
        "",
        "| figure | backend | target | measured | met | measured alone by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in issue_26(sections):
        lines.append(
            f"| {row.figure} | {row.backend} | {row.target} | {row.measured} | {_met(row.met)} | `{row.command}` |"
        )
    lines += ["", "## Machine", "", *_machine(results["machine"]), ""]
    lines += [
        "## Commands",
        "",
        "```sh",
        "apt-get install -y wrk                 # the load generator (without it: a slower Python one)",
        "python -m bench                        # everything (~25 min): bench/results/latest.json + this file",
        "python -m bench --smoke                # ~2 min, tiny sizes (CI: tests/test_bench_smoke.py)",
        "python -m bench --only ingest,e2e      # some sections (JSON to bench/results/partial.json)",
        "python -m bench.ingest                 # each section alone, see each module's --help",
        "python -m bench.floor --rounds 3       # the ingest ladder: bare, + parse, + validate, + commit, cos-relay",
        "python -m bench.floor --postgres       # bare, parse + commit, cos-relay on PostgreSQL (its server's CPU too)",
        "python -m bench.fanout --levels 1000 --requests 100 --scrapes 0  # ack p99, 1,000 subscribers [--postgres]",
        "python -m bench.disk --parts 3 --callbacks 100  # bytes stored per callback, both backends",
        "python -m bench.delivery --events 20000 --rounds 3  # the median round of three",
        "python -m bench.fairness --seconds 6   # events delivered during saturated ingest, outbox lag",
        "python -m bench.regimes                # the same, load after load on one gateway: CPU and share per load",
        "python -m bench.e2e --rate 200 --seconds 30",
        "python -m bench.memory --callbacks 200000",
        "python -m bench.history --jobs 1000000",
        "python -m bench.claims                 # a claim's CPU a delivery at 1, 10, 100, 1,000 subscribers",
        "python -m bench.attempts_index         # the attempts of the log: insert and page, as the table grows",
        "python bench/validation.py             # every sample body",
        "python -m bench.profile                # py-spy profile of the ingest path (py-spy installed separately)",
        "```",
        "",
    ]
    parts = (
        ("1. Ingest throughput and ack latency (bench/ingest.py)", "ingest", _ingest),
        ("1b. The ingest ladder: what any design could reach (bench/floor.py)", "floor", floor_table),
        ("2. Delivery throughput (bench/delivery.py)", "delivery", delivery_table),
        ("2b. Delivery during saturated ingest (bench/fairness.py)", "fairness", fairness_table),
        ("3. End-to-end latency (bench/e2e.py)", "e2e", _e2e),
        ("4. Memory (bench/memory.py)", "memory", _memory),
        ("5. Scale with history (bench/history.py)", "history", _history),
        ("6. Validation cost per body (bench/validation.py)", "validation", lambda validation: [validation["table"]]),
        ("7. Ack latency with many subscribers (bench/fanout.py)", "fanout", _fanout),
        ("8. Bytes stored per callback with many subscribers (bench/disk.py)", "disk", _disk),
        ("9. On PostgreSQL: the ladder against cos-relay (bench/floor.py --postgres)", "floor_pg", floor_table),
        ("9b. On PostgreSQL: delivery throughput (bench/delivery.py --postgres)", "delivery_pg", delivery_table),
        (
            "9c. On PostgreSQL: delivery during saturated ingest (bench/fairness.py --postgres)",
            "fairness_pg",
            fairness_table,
        ),
        ("9d. On PostgreSQL: ack latency with many subscribers (bench/fanout.py --postgres)", "fanout_pg", _fanout),
        ("9e. On PostgreSQL: bytes stored per callback (bench/disk.py)", "disk_pg", _disk),
    )
    for title, key, render in parts:
        lines += [f"## {title}", ""]
        if key in sections:
            lines += render(sections[key])
        else:
            lines.append(f"Not run: {results['errors'].get(key, 'not selected')}")
        lines.append("")
    lines += ["## Method", "", *METHOD]
    return "\n".join(lines) + "\n"


#: A section measured by a module run on its own ends its title with it: regenerating the report keeps it as it was.
STANDALONE = "run on its own)"


def standalone(previous: str) -> str:
    """The sections of the previous report whose title ends with `STANDALONE`, each up to the next section."""
    kept, keeping = [], False
    for line in previous.splitlines():
        if line.startswith("## "):
            keeping = line.rstrip().endswith(STANDALONE)
        if keeping:
            kept.append(line)
    return "\n".join(["", *kept]) + "\n" if kept else ""


METHOD = [
    "* Only loopback traffic. Every server is a child process in its own process group, stopped"
    " (SIGTERM, then SIGKILL) when its measurement ends, also on errors. Every load is bounded in"
    " requests and time.",
    "* Every callback is `tests/data/samples/transcode_success.xml` (4.8 KB) with a JobId no request"
    " used before (bench/callback.lua for wrk, bench/load.py otherwise), so each one is a new job:"
    " validation, dedup, the event, the delivery and the durable commit all do their full work.",
    "* The gateway is the real CLI, `python -m relay serve --callback-token ... --workers N` on a fresh"
    " database, default durability (WAL, synchronous=NORMAL), info-level logs to a file. The baseline,"
    " bench/bare.py, is a Starlette endpoint on uvicorn that reads the body and answers 200, with the"
    " same options (httptools, uvloop, no access log).",
    "* The fixed-rate generator starts each request on schedule whatever the server does and measures"
    " from the scheduled time, so a stall is not hidden by requests that were never sent.",
    "* Other load: the CPU the rest of the machine used during a run (all busy CPU time minus this"
    " suite's own processes: the benchmark, its load generators and servers), in cores. This"
    " machine is shared; a run next to a large figure measured the neighbours as much as the code.",
    "* The suite fits in about 25 minutes (10 before issue 26's rows joined it): the memory section ingests as many"
    " callbacks as the remaining time allows at the rate measured in section 1 (up to 200,000); the table says how"
    " many. The validation section measures a few representative bodies; `python bench/validation.py` measures"
    " them all.",
    "* The PostgreSQL sections (`_pg`) share one throwaway PostgreSQL 15 cluster (tests/postgres.py: fsync off, in"
    " the temporary folder), started by the first of them and removed at the end; each measurement gets a fresh"
    " database in it.",
]
