"""The installed `tocsin` command, run as a subprocess (as a person or a script runs it)
against the live stack: every subcommand, `-o json` parsed back, exit codes, the SSE
tail resuming across an api restart, and docs/cli.md's examples.

`config check` and `admin` need no api: they run against the stack's Kafka alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.integration.harness import infra_from_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOCSIN = str(Path(sys.executable).parent / "tocsin")  # the console script make venv installs


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def tocsin(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60.0,
    cwd: Path = ROOT,
) -> Run:
    """Run the installed command with ``args``; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        TOCSIN,
        *args,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), timeout
    )
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def kafka_env() -> dict[str, str]:
    bootstrap, _ = infra_from_env()
    return {"TOCSIN_KAFKA_BOOTSTRAP": bootstrap}


# ---------------------------------------------------------------------------------------------
# No api needed: config check, admin, completion
# ---------------------------------------------------------------------------------------------


async def test_config_check_accepts_the_example_and_names_the_problem_of_a_bad_file(
    tmp_path: Path,
) -> None:
    good = await tocsin("config", "check", "config/tocsin.example.yaml")
    assert good.code == 0, good.stderr
    assert good.stdout.startswith("config/tocsin.example.yaml: valid (")

    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(
        "version: 1\nservices:\n  - id: checkout\n    name: Checkout\n"
        "    escalation_policy: checkout-primary\n    ack_timeout: soon\n"
    )
    bad = await tocsin("config", "check", str(bad_file))
    assert bad.code == 1
    assert f"{bad_file}:6: services[0].ack_timeout:" in bad.stdout
    assert "'soon'" in bad.stdout

    as_json = (await tocsin("config", "check", str(bad_file), "-o", "json")).json()
    assert as_json["valid"] is False
    assert {"file": str(bad_file), "path": "services[0].ack_timeout", "line": 6}.items() <= (
        as_json["issues"][0].items()
    )
    missing = await tocsin("config", "check", str(tmp_path / "nope.yaml"))
    assert (missing.code, missing.stdout.strip()) == (
        1,
        f"{tmp_path / 'nope.yaml'}: file not found",
    )


async def test_admin_topics_checks_every_topic_and_its_partitions() -> None:
    from tocsin_common.topics import ALL_TOPICS

    result = await tocsin("admin", "topics", "-o", "json", env=kafka_env())
    assert result.code == 0, result.stderr
    rows = {r["topic"]: r for r in result.json()}
    assert set(rows) == {t.name for t in ALL_TOPICS}
    for topic in ALL_TOPICS:
        assert (rows[topic.name]["partitions"], rows[topic.name]["status"]) == (
            topic.partitions,
            "ok",
        )
    table = await tocsin("admin", "topics", env=kafka_env())
    assert table.stdout.splitlines()[0].split()[:2] == ["topic", "expected"]
    unreachable = await tocsin(
        "admin", "topics", "--bootstrap", "127.0.0.1:1", "--kafka-timeout", "2", timeout=30
    )
    assert unreachable.code == 6, unreachable.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in unreachable.stderr


def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(count):
        producer.send(topic, key=f"k{i}".encode(), value=b"x")
    producer.flush()
    producer.close()


def _consume_and_commit(bootstrap: str, group: str, topic: str, count: int) -> KafkaConsumer:
    """A member of ``group`` that has read and committed ``count`` records (left running)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen = 0
    deadline = time.monotonic() + 30
    while seen < count and time.monotonic() < deadline:
        seen += sum(len(r) for r in consumer.poll(500).values())
    assert seen == count
    consumer.commit()
    return consumer


async def test_admin_lag_and_replay_of_a_group(tmp_path: Path) -> None:
    bootstrap, _ = infra_from_env()
    env = {"TOCSIN_KAFKA_BOOTSTRAP": bootstrap}
    # A group of this test alone, on a topic no service consumes (3 partitions).
    group = f"cli-test-{uuid.uuid4().hex[:8]}"
    topic = "alerts.deadletter"
    before = await tocsin("admin", "lag", "--group", group, "-o", "json", env=env)
    already = sum(r["end"] for r in before.json())
    await asyncio.to_thread(_produce, bootstrap, topic, 6)
    consumer = await asyncio.to_thread(_consume_and_commit, bootstrap, group, topic, already + 6)
    try:
        lag = (await tocsin("admin", "lag", "--group", group, "-o", "json", env=env)).json()
        assert [(r["topic"], r["lag"], r["partitions"]) for r in lag] == [(topic, 0, 3)]
        assert lag[0]["committed"] == lag[0]["end"] == already + 6

        # While the group has a member, a replay is refused: exit 5, nothing changed.
        busy = await tocsin(
            "admin", "replay", group, "--topic", topic, "--to-earliest", "--yes", env=env
        )
        assert busy.code == 5, busy.stderr
        assert f"group {group} has 1 active member(s)" in busy.stderr
    finally:
        await asyncio.to_thread(consumer.close)

    dry = await tocsin(
        "admin",
        "replay",
        group,
        "--topic",
        topic,
        "--to-earliest",
        "--dry-run",
        "-o",
        "json",
        env=env,
    )
    assert dry.code == 0, dry.stderr
    assert {r["after"] for r in dry.json()} == {0}
    unchanged = (await tocsin("admin", "lag", "--group", group, "-o", "json", env=env)).json()
    assert unchanged[0]["lag"] == 0  # a dry run changes nothing

    # Without --yes it asks; "n" keeps the offsets.
    declined = await tocsin(
        "admin", "replay", group, "--topic", topic, "--to-earliest", env=env, stdin="n\n"
    )
    assert declined.code == 1
    assert (await tocsin("admin", "lag", "--group", group, "-o", "json", env=env)).json()[0][
        "lag"
    ] == 0

    done = await tocsin(
        "admin", "replay", group, "--topic", topic, "--to-earliest", env=env, stdin="y\n"
    )
    assert done.code == 0, done.stderr
    after = (await tocsin("admin", "lag", "--group", group, "-o", "json", env=env)).json()
    assert (after[0]["committed"], after[0]["lag"]) == (0, already + 6)

    # --to-datetime in the future: past the last record, so nothing is left to replay.
    future = await tocsin(
        "admin",
        "replay",
        group,
        "--topic",
        topic,
        "--to-datetime",
        "2999-01-01T00:00:00Z",
        "--yes",
        env=env,
    )
    assert future.code == 0, future.stderr
    assert (await tocsin("admin", "lag", "--group", group, "-o", "json", env=env)).json()[0][
        "lag"
    ] == 0

    usage = await tocsin("admin", "replay", group, "--topic", topic, env=env)
    assert usage.code == 2
    assert "--to-earliest or --to-datetime" in usage.stderr
    unknown = await tocsin(
        "admin", "replay", group, "--topic", "no.such.topic", "--to-earliest", env=env
    )
    assert unknown.code == 4


async def test_shell_completion_completes_commands() -> None:
    words = await tocsin(
        env={
            "_TOCSIN_COMPLETE": "complete_bash",
            "COMP_WORDS": "tocsin incidents a",
            "COMP_CWORD": "2",
        }
    )
    assert words.stdout.split() == ["ack"]
    script = await tocsin("--show-completion", "bash", env={"SHELL": "/bin/bash"})
    assert "_tocsin_completion" in script.stdout
