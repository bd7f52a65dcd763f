"""The four chat platforms for tests: a real Starlette app on loopback that checks each robot's signature the way
its platform documents it and answers the way the platform does (the facts: docs/robots.md with its
sources, docs/configuration.md).

A robot's credential (WeCom's key, Feishu's token, DingTalk's access_token, Slack's last path segment) says how
its platform answers: ``ok-…`` succeeds, ``limited-…`` is rate limited, ``bad-…`` is refused with the platform's
error for a wrong credential. A Feishu or DingTalk robot given a secret with `sign` checks every request's
signature (a missing or wrong one is refused as the platform refuses it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.live import ThreadServer

#: Each platform accepts a signature made within an hour of its clock.
WITHIN = 3600


@dataclass(frozen=True)
class Message:
    """One request a robot received, and how its platform judged it."""

    platform: str
    credential: str
    body: dict[str, Any]
    query: dict[str, str]
    verdict: str


def feishu_sign(secret: str, timestamp: str) -> str:
    """Feishu's documented recipe: HMAC-SHA256 keyed with "timestamp\\nsecret" over an empty message, base64."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def dingtalk_sign(secret: str, timestamp: str) -> str:
    """DingTalk's documented recipe: HMAC-SHA256 keyed with the secret over "timestamp\\nsecret", base64 (the
    query's URL-encoding is undone by the query parser)."""
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass
class Platforms:
    #: Feishu tokens and DingTalk access tokens whose robot signs, with its secret.
    secrets: dict[str, str] = field(default_factory=dict)
    received: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadServer | None = None

    def sign(self, credential: str, secret: str) -> Platforms:
        self.secrets[credential] = secret
        return self

    def serve(self) -> Platforms:
        self.server = ThreadServer(self.app()).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def to(self, credential: str) -> list[Message]:
        with self.lock:
            return [message for message in self.received if message.credential == credential]

    def _record(self, platform: str, credential: str, body: dict[str, Any], request: Request, verdict: str) -> None:
        with self.lock:
            self.received.append(Message(platform, credential, body, dict(request.query_params), verdict))

    def app(self) -> Starlette:
        async def wecom(request: Request) -> Response:
            key = request.query_params.get("key", "")
            body = json.loads(await request.body())
            if key.startswith("bad"):
                self._record("wecom", key, body, request, "refused")
                return JSONResponse({"errcode": 93000, "errmsg": "invalid webhook url, hint: [1], from ip: 127.0.0.1"})
            if key.startswith("limited"):
                self._record("wecom", key, body, request, "limited")
                return JSONResponse({"errcode": 45009, "errmsg": "api freq out of limit"})
            self._record("wecom", key, body, request, "sent")
            return JSONResponse({"errcode": 0, "errmsg": "ok"})

        async def feishu(request: Request) -> Response:
            token = request.path_params["token"]
            body = json.loads(await request.body())
            secret = self.secrets.get(token)
            if secret is not None:
                timestamp = str(body.get("timestamp", ""))
                fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < WITHIN
                if not fresh or not hmac.compare_digest(str(body.get("sign", "")), feishu_sign(secret, timestamp)):
                    self._record("feishu", token, body, request, "unsigned")
                    return JSONResponse(
                        {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}
                    )
            if token.startswith("limited"):
                self._record("feishu", token, body, request, "limited")
                return JSONResponse({"code": 9499, "msg": "too many request", "data": {}}, status_code=400)
            self._record("feishu", token, body, request, "sent")
            return JSONResponse({"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"})

        async def dingtalk(request: Request) -> Response:
            token = request.query_params.get("access_token", "")
            body = json.loads(await request.body())
            secret = self.secrets.get(token)
            if secret is not None:
                timestamp = request.query_params.get("timestamp", "")
                fresh = timestamp.isdigit() and abs(time.time() * 1000 - int(timestamp)) < WITHIN * 1000
                sign = request.query_params.get("sign", "")
                if not fresh or not hmac.compare_digest(sign, dingtalk_sign(secret, timestamp)):
                    self._record("dingtalk", token, body, request, "unsigned")
                    return JSONResponse({"errcode": 310000, "errmsg": "sign not match"})
            if token.startswith("bad"):
                self._record("dingtalk", token, body, request, "refused")
                return JSONResponse({"errcode": 300001, "errmsg": "token is not exist"})
            if token.startswith("limited"):
                self._record("dingtalk", token, body, request, "limited")
                return JSONResponse({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
            self._record("dingtalk", token, body, request, "sent")
            return JSONResponse({"errcode": 0, "errmsg": "ok"})

        async def slack(request: Request) -> Response:
            token = request.path_params["path"].rpartition("/")[2]
            body = json.loads(await request.body())
            if token.startswith("bad"):
                self._record("slack", token, body, request, "refused")
                return PlainTextResponse("invalid_token", status_code=403)
            # Rate limited once, then through: what Retry-After promises.
            if token.startswith("limited") and not self.to(token):
                self._record("slack", token, body, request, "limited")
                return PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "1"})
            self._record("slack", token, body, request, "sent")
            return PlainTextResponse("ok")

        return Starlette(
            routes=[
                Route("/cgi-bin/webhook/send", wecom, methods=["POST"]),
                Route("/open-apis/bot/v2/hook/{token}", feishu, methods=["POST"]),
                Route("/robot/send", dingtalk, methods=["POST"]),
                Route("/services/{path:path}", slack, methods=["POST"]),
            ]
        )
