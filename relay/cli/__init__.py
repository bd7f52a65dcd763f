"""The ``cos-relay`` command line: serve the gateway, validate bodies, look at jobs, manage subscribers."""

from __future__ import annotations

import click

from relay import __version__
from relay.cli.cos import cos
from relay.cli.deliveries import deliveries
from relay.cli.jobs import jobs
from relay.cli.maintenance import backup, prune
from relay.cli.migrate import migrate_to
from relay.cli.reconcile import reconcile
from relay.cli.refusals import Commands
from relay.cli.secrets import secrets
from relay.cli.serve import serve
from relay.cli.subscribers import subscribers
from relay.cli.tokens import sessions, tokens
from relay.cli.validate import validate
from relay.cli.workflows import workflows


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cos-relay")
def main() -> None:
    """cos-relay: a gateway for Tencent Cloud COS data-processing callbacks."""


main.add_command(serve)
main.add_command(tokens)
main.add_command(sessions)
main.add_command(validate)
main.add_command(jobs)
main.add_command(workflows)
main.add_command(subscribers)
main.add_command(deliveries)
main.add_command(prune)
main.add_command(backup)
main.add_command(migrate_to)
main.add_command(secrets)
main.add_command(reconcile)
main.add_command(cos)
