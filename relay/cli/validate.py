"""``cos-relay validate FILE...``: check bodies against the schema, with path-precise errors."""

from __future__ import annotations

from pathlib import Path

import click

from relay.errors import Rejected
from relay.receive.body import body_format
from relay.validate.parse import new_xml_parser, parse
from relay.validate.schema import CallbackSchema, SchemaViolation


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Exit 0 when every FILE is a valid COS callback, else 1 with the reasons."""
    schema = CallbackSchema.load()
    parser = new_xml_parser()
    failed = 0
    for path in files:
        body = path.read_bytes()
        content_type = "application/json" if path.suffix.lower() == ".json" else None
        try:
            root = parse(body, body_format(content_type, body), parser)
            schema.convert(root)
        except Rejected as error:
            failed += 1
            click.echo(f"{path}: invalid ({error.status} {error.outcome}): {error.detail}")
        except SchemaViolation as violation:
            failed += 1
            click.echo(f"{path}: invalid (422)")
            for reason in schema.explain(root) or violation.violations:
                click.echo(f"  {reason.path}: {reason.rule}")
        else:
            click.echo(f"{path}: valid")
    raise SystemExit(1 if failed else 0)
