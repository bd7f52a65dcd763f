"""``cos-relay validate FILE...``: check bodies as the endpoint would, with path-precise errors."""

from __future__ import annotations

from pathlib import Path

import click

from relay.domain.errors import Invalid, Rejected
from relay.http.errors import status_of
from relay.ingest import Reader
from relay.receive.body import body_format
from relay.validate.parse import new_xml_parser
from relay.validate.schema import CallbackSchema


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Exit 0 when every FILE is a valid COS callback, else 1 with the reasons."""
    reader = Reader(CallbackSchema.load())
    parser = new_xml_parser()
    failed = 0
    for path in files:
        body = path.read_bytes()
        content_type = "application/json" if path.suffix.lower() == ".json" else None
        try:
            reader.check(body, body_format(content_type, body), parser, explain=True)
        except Invalid as error:
            failed += 1
            if not error.reasons:
                click.echo(f"{path}: invalid ({status_of(error)} {error.outcome}): {error.detail}")
            else:
                click.echo(f"{path}: invalid ({status_of(error)})")
                for where, rule in error.reasons:
                    click.echo(f"  {where}: {rule}")
        except Rejected as error:
            failed += 1
            click.echo(f"{path}: invalid ({status_of(error)} {error.outcome}): {error.detail}")
        else:
            click.echo(f"{path}: valid")
    raise SystemExit(1 if failed else 0)
