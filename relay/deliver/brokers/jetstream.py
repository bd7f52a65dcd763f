"""NATS JetStream: an acknowledged publish, so the attempt succeeds only once a stream has stored the message.

The URL: ``nats://[user:password@ | token@]host[:port][?prefix=SUBJECT.PREFIX]`` (``tls://`` for TLS). The
subject is the event type (``cos.job.failed``), under the prefix when one is given (``relay.cos.job.failed``).
The relay creates no stream: its retention, storage and replicas are the operator's, who creates one capturing
the subjects (``nats stream add COS_RELAY --subjects 'cos.>'``); until then every attempt fails, and is retried,
as "no stream takes the subject". ``Nats-Msg-Id`` is the event id and the subject (``<id>:<subject>``), so the
stream keeps one copy of an event published twice to a subject within its duplicate window (an attempt whose
acknowledgement was lost, retried), yet two subscribers whose subjects share a stream each get theirs.
"""

from __future__ import annotations

import ssl
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from yarl import URL

from relay.deliver.brokers.base import Broker, Message, Refused
from relay.domain.delivery import Outcome

#: How JetStream knows a message it has seen (its duplicate window, 2 minutes by default).
MSG_ID = "Nats-Msg-Id"
#: Header names' prefix in the CloudEvents NATS binding (binary mode, 3.1.1).
CE_PREFIX = "ce-"


def subject_of(target: URL, message: Message) -> str:
    prefix = target.query.get("prefix", "")
    return f"{prefix}.{message.event_type}" if prefix else message.event_type


async def _ignore(*_: object) -> None:
    """nats-py's default callbacks log every error and disconnect; the attempts say it already."""


class JetStream(Broker[Client]):
    async def _connect(self, target: URL, address: str, port: int) -> Client:
        server = str(URL.build(scheme=target.scheme, host=address, port=port))
        tls: dict[str, Any] = {}
        if target.scheme == "tls":
            # Checked against the name in the URL, though the connection goes to the vetted address.
            tls = {"tls": ssl.create_default_context(), "tls_hostname": target.host}
        login: dict[str, Any] = {}
        if target.user and target.password is not None:
            login = {"user": target.user, "password": target.password}
        elif target.user:
            login = {"token": target.user}
        client, seen = Client(), list[Exception]()

        async def note(error: Exception) -> None:
            seen[:] = [error]  # the last only: a connection lives long

        try:
            await client.connect(
                servers=[server],
                name="cos-relay",
                # A lost connection is dropped and made again by the next attempt, to the vetted address.
                allow_reconnect=False,
                # Its first connect tries a server until it has failed more than this often (0 would mean forever).
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=note,
                disconnected_cb=_ignore,
                closed_cb=_ignore,
                **tls,
                **login,
            )
        except BaseException as exc:
            # Cut short (the claim's timeout) or refused: its half-open transport is closed, not left to the GC.
            await self._close_quietly(client)
            if isinstance(exc, nats.errors.NoServersError) and seen:
                raise exc from seen[0]  # why the server could not be had: refused, reset, its certificate
            raise
        return client

    def _usable(self, connection: Client) -> bool:
        return connection.is_connected

    async def _publish(self, connection: Client, target: URL, message: Message, timeout: float) -> bytes:
        subject = subject_of(target, message)
        headers = {MSG_ID: f"{message.event_id}:{subject}", "content-type": message.content_type, **message.signature}
        headers |= {f"{CE_PREFIX}{name}": value for name, value in message.attributes.items()}
        try:
            ack = await connection.jetstream().publish(subject, message.body, timeout=timeout, headers=headers)
        # As for RabbitMQ: a subject no stream takes is the receiver's configuration (HTTP_4XX, like a 404);
        # a stream that refuses the message (full, its limits, a leader lost) is the broker's failure (HTTP_5XX).
        except nats.js.errors.NoStreamResponseError:
            raise Refused(Outcome.HTTP_4XX, f"no JetStream stream takes subject {subject}") from None
        except nats.js.errors.APIError as exc:
            raise Refused(Outcome.HTTP_5XX, f"JetStream refused the message: {exc.code} {exc.description}") from None
        return orjson.dumps({"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)})

    async def _disconnect(self, connection: Client) -> None:
        await connection.close()
