"""A subscriber's own message template: what it sees, its check when it is set, and its rendering at delivery."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Template

from relay.deliver.robots.messages import Message, describe
from relay.deliver.robots.sandbox import RENDER_SECONDS, Raw, Sandbox, TemplateFailed, compile_template, render

#: Compiled templates kept (one per subscriber's template in practice); beyond this the cache starts over.
TEMPLATE_CACHE = 256
#: Events a template is tried on when it is set: a template failing on any of them is refused then, not at
#: delivery. Their data is as COS sends it (see docs/events.md), trimmed to what messages use.
SAMPLES: tuple[dict[str, Any], ...] = (
    {
        "specversion": "1.0",
        "id": "5f1c2d3e-8a4b-5c6d-9e0f-112233445566",
        "source": "/cos-relay/cos-relay/buckets/examplebucket-1250000000/queues/pe820cf648126910f305549c39b7b7183",
        "type": "cos.job.failed",
        "subject": "j4f03b1d05f0e7044d2c4d6c4845357f0",
        "time": "2024-11-05T03:02:19Z",
        "datacontenttype": "application/json",
        "data": {
            "Code": "InvalidInput",
            "Message": "source file is invalid, moov atom not found",
            "JobId": "j4f03b1d05f0e7044d2c4d6c4845357f0",
            "State": "Failed",
            "Tag": "Transcode",
            "QueueId": "pe820cf648126910f305549c39b7b7183",
            "CreationTime": "2024-11-05T11:02:17+0800",
            "EndTime": "2024-11-05T11:02:19+0800",
            "Input": {"BucketId": "examplebucket-1250000000", "Object": "uploads/a.mp4", "Region": "ap-guangzhou"},
            "Operation": {"TemplateName": "MP4-H264-HD", "UserData": "lesson=7"},
        },
    },
    {
        "specversion": "1.0",
        "id": "6f1c2d3e-8a4b-5c6d-9e0f-112233445566",
        "source": "/cos-relay/cos-relay/buckets/examplebucket-1250000000/workflows/w1b4f6a9c3e5d7f9a1b3c5d7e9f1a3b5c",
        "type": "cos.workflow.failed",
        "subject": "i2a4c6e8f0a2c4e6a8c0e2a4c6e8f0a2c",
        "time": "2024-11-05T03:02:19Z",
        "datacontenttype": "application/json",
        "data": {
            "RunId": "i2a4c6e8f0a2c4e6a8c0e2a4c6e8f0a2c",
            "WorkflowId": "w1b4f6a9c3e5d7f9a1b3c5d7e9f1a3b5c",
            "WorkflowName": "transcode-uploads",
            "State": "Failed",
            "Object": "uploads/a.mp4",
            "Tasks": [{"Type": "Transcode", "Name": "Transcode_1", "State": "Failed", "JobId": "j1"}],
        },
    },
    {
        "specversion": "1.0",
        "id": "7f1c2d3e-8a4b-5c6d-9e0f-112233445566",
        "source": "/cos-relay/cos-relay",
        "type": "cos.job.nonexistent",
        "time": "2024-11-05T03:02:19Z",
        "datacontenttype": "application/json",
        "data": {"NonExistJobIds": ["j0000000000000000000000000000000a"]},
    },
)


def context(event: Mapping[str, Any], message: Message, text: str) -> dict[str, Any]:
    """What a template sees: the CloudEvent and its parts, the default message's title and link, and the default
    message itself (``text``, in the platform's markup: printed as it is)."""
    return {
        "event": event,
        "data": event.get("data"),
        "type": event.get("type"),
        "subject": event.get("subject"),
        "id": event.get("id"),
        "time": event.get("time"),
        "title": message.title,
        "link": message.link,
        "message": Raw(text),
    }


def check_template(text: str, seconds: float = RENDER_SECONDS) -> None:
    """ValueError saying why ``text`` cannot be a robot's template: it does not compile, or it fails on any of the
    `SAMPLES` or its renders of all of them take more CPU than one render may (``seconds``; the API checks on its
    event loop: this bounds the wait)."""
    sandbox = Sandbox(str)
    try:
        template = compile_template(sandbox, text)
        started = time.thread_time()
        for event in SAMPLES:
            message = describe(event, "https://relay.example")
            left = max(seconds - (time.thread_time() - started), 0.0)
            render(template, context(event, message, message.title), left)
    except TemplateFailed as error:
        raise ValueError(f"template: {error}") from None


class Templates:
    """Subscribers' templates for one platform, compiled once each."""

    def __init__(self, escape: Callable[[str], str]) -> None:
        self._sandbox = Sandbox(escape)
        self._compiled: dict[str, Template | TemplateFailed] = {}

    def compiled(self, text: str) -> Template:
        """The compiled template; `TemplateFailed` (remembered too) for one that does not compile."""
        found = self._compiled.get(text)
        if found is None:
            if len(self._compiled) >= TEMPLATE_CACHE:
                self._compiled.clear()
            try:
                found = compile_template(self._sandbox, text)
            except TemplateFailed as error:
                found = error
            self._compiled[text] = found
        if isinstance(found, TemplateFailed):
            raise found
        return found

    def render(self, text: str, event: Mapping[str, Any], message: Message, default: str) -> str:
        """``text`` rendered for ``event``; `TemplateFailed` when it fails (the robot then sends ``default``)."""
        return render(self.compiled(text), context(event, message, default))
