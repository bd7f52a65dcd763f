"""Team chat robots as destinations: WeCom, Feishu/Lark, DingTalk and Slack (see docs/configuration.md)."""

from __future__ import annotations

from relay.deliver.client import Sender
from relay.deliver.robots.dingtalk import DingTalk
from relay.deliver.robots.feishu import Feishu
from relay.deliver.robots.robot import Robot
from relay.deliver.robots.slack import Slack
from relay.deliver.robots.wecom import WeCom
from relay.domain.destinations import Kind


def robots(sender: Sender, public_url: str | None) -> dict[Kind, Robot]:
    """One destination per robot kind, sending through ``sender``; messages link to ``public_url``'s console."""
    return {platform.kind: Robot(sender, platform, public_url) for platform in (WeCom(), Feishu(), DingTalk(), Slack())}
