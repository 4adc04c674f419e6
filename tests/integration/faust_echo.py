"""A faust worker made by tocsin_common.faustapp.make_app, as correlation makes its own,
copying every record of $ECHO_IN to $ECHO_OUT: run by the Kafka transport test against a
SASL_SSL broker, with the Kafka security settings in its environment."""

from __future__ import annotations

import os
from typing import Any

import faust
from tocsin_common.faustapp import make_app, raw_topic, worker_event_loop
from tocsin_common.settings import Settings
from tocsin_common.topics import Topic


def main() -> None:
    settings = Settings.from_env("correlation")
    app = make_app(settings, os.environ["ECHO_APP_ID"])
    source = raw_topic(app, Topic(os.environ["ECHO_IN"], 2, "test input", "bytes"))
    sink = raw_topic(app, Topic(os.environ["ECHO_OUT"], 2, "test output", "bytes"))

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def echo(stream: Any) -> None:
        async for key, value in stream.items():
            await sink.send(key=key, value=b"echo:" + value)

    loop = worker_event_loop(os.environ)
    faust.Worker(
        app, loglevel="WARNING", quiet=True, loop=loop, redirect_stdouts=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
