"""Calendar feeds: a per-user secret token in the feed's URL, for calendar apps that cannot
send a bearer credential. Only the token's SHA-256 is kept (Redis hash
``tocsin:api:ical``: sha256 -> JSON of the subject and the schedule), so a copy of Redis
cannot read anyone's feed; the token itself is shown once, in the URL.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

FEEDS_KEY = "tocsin:api:ical"
PREFIX = "tcal_"


@dataclass(frozen=True)
class Feed:
    subject_id: str
    subject_kind: int
    schedule_id: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class FeedStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(self, feed: Feed) -> str:
        token = new_token()
        value = json.dumps(
            {
                "subject_id": feed.subject_id,
                "kind": feed.subject_kind,
                "schedule_id": feed.schedule_id,
            }
        )
        await self._redis.hset(FEEDS_KEY, digest(token), value)
        return token

    async def find(self, token: str) -> Feed | None:
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        raw = await self._redis.hget(FEEDS_KEY, digest(token))
        if raw is None:
            return None
        data = json.loads(raw)
        return Feed(str(data["subject_id"]), int(data["kind"]), str(data["schedule_id"]))
