"""COS queues and where their callbacks point (FORMAT.md §12b): read from ``GET /queue`` (and the other families'
queue lists), and the ``<Request>`` that points one at this gateway (``PUT /queue/<id>``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from lxml import etree

from relay.cos.client import CosApi, Family
from relay.cos.sources import CosSource
from relay.domain.tokens import tokens_match

#: What COS calls back for, set on a connected queue.
EVENTS = "TaskFinish,WorkflowFinish"


@dataclass(frozen=True)
class Queue:
    family: Family
    queue_id: str
    name: str
    state: str  # Active or Paused
    callback_on: bool
    callback_url: str


def families(source: CosSource) -> Iterator[Family]:
    """The queue families a source reconciles, whose queues `connect` points here."""
    if source.tags:
        yield "media"
    if source.pictures:
        yield "pictures"
    if source.speech:
        yield "speech"
    if source.documents:
        yield "documents"


def queues_of(family: Family, answer: etree._Element) -> list[Queue]:
    """The queues of a list answer (``<Response><QueueList>…``)."""
    found = []
    for item in answer.iterfind("QueueList"):
        notify = item.find("NotifyConfig")
        found.append(
            Queue(
                family,
                (item.findtext("QueueId") or "").strip(),
                (item.findtext("Name") or "").strip(),
                (item.findtext("State") or "").strip(),
                notify is not None and (notify.findtext("State") or "").strip() == "On",
                "" if notify is None else (notify.findtext("Url") or "").strip(),
            )
        )
    return found


async def source_queues(api: CosApi, source: CosSource) -> list[Queue]:
    """The source's queues, as COS lists them: every family it reconciles, only its ``queues`` when it names some."""
    found = []
    for family in families(source):
        listed = queues_of(family, await api.list_queues(family))
        found += [queue for queue in listed if not source.queues or queue.queue_id in source.queues]
    return found


def points_here(queue: Queue, callback_url: str, tokens: tuple[str, ...]) -> bool:
    """Whether the queue calls back this gateway: on, at ``callback_url``, with a token in force."""
    if not queue.callback_on:
        return False
    given = urlsplit(queue.callback_url)
    if f"{given.scheme}://{given.netloc}{given.path}" != callback_url:
        return False
    sent = parse_qs(given.query).get("token", [""])[0]
    return any(tokens_match(sent, token) for token in tokens)


def shown_url(url: str) -> str:
    """A callback URL without its query: the token in it is a secret."""
    given = urlsplit(url)
    return f"{given.scheme}://{given.netloc}{given.path}" if given.netloc else url or "(none)"


def connect_request(queue: Queue, url: str) -> bytes:
    """The ``<Request>`` that keeps the queue's name and state and points its callback at ``url``, for every
    finished task and workflow, in XML."""
    request = etree.Element("Request")
    etree.SubElement(request, "Name").text = queue.name
    etree.SubElement(request, "QueueID").text = queue.queue_id
    etree.SubElement(request, "State").text = queue.state or "Active"
    notify = etree.SubElement(request, "NotifyConfig")
    for name, value in (("State", "On"), ("Type", "Url"), ("Url", url), ("Event", EVENTS), ("ResultFormat", "XML")):
        etree.SubElement(notify, name).text = value
    return bytes(etree.tostring(request, encoding="utf-8"))
