"""The installed `tocsin` command, run as a subprocess (as a person or a script runs it)
against the live stack: every subcommand, `-o json` parsed back, exit codes, the SSE
tail resuming across an api restart, and docs/cli.md's examples.

`config check` and `admin` need no api: they run against the stack's Kafka alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from tocsin.v1 import incident_service_pb2, incident_service_pb2_grpc

from tests.integration.api_client import client, incident_titled, trigger
from tests.integration.harness import Stack, free_port, infra_from_env

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
    from tocsin_common.settings import kafka_partitions
    from tocsin_common.topics import ALL_TOPICS

    # The stack's topics have the profile's TOCSIN_KAFKA_PARTITIONS, which the CLI reads too.
    configured = kafka_partitions()
    result = await tocsin("admin", "topics", "-o", "json", env=kafka_env())
    assert result.code == 0, result.stderr
    rows = {r["topic"]: r for r in result.json()}
    assert set(rows) == {t.name for t in ALL_TOPICS}
    for topic in ALL_TOPICS:
        assert (rows[topic.name]["partitions"], rows[topic.name]["status"]) == (
            topic.partition_count(configured),
            "ok",
        )
    table = await tocsin("admin", "topics", env=kafka_env())
    assert table.stdout.splitlines()[0].split()[:2] == ["topic", "expected"]
    # Another setting than the topics were created with: every pipeline topic is reported.
    other = await tocsin(
        "admin", "topics", "-o", "json", "--partitions", str(configured + 1), env=kafka_env()
    )
    assert other.code == 1
    wrong = {r["topic"]: r["status"] for r in other.json() if r["status"] != "ok"}
    assert wrong == {
        t.name: f"has {configured} partitions, expected {configured + 1}"
        for t in ALL_TOPICS
        if t.partitions is None
    }
    unreachable = await tocsin(
        "admin", "topics", "--bootstrap", "127.0.0.1:1", "--kafka-timeout", "2", timeout=30
    )
    assert unreachable.code == 6, unreachable.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in unreachable.stderr


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


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
    # A group and a topic (3 partitions) of this test alone.
    group = f"cli-test-{uuid.uuid4().hex[:8]}"
    topic = f"cli-test-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_create_topic, bootstrap, topic, 3)
    already = 0
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
        "admin",
        "replay",
        group,
        "--topic",
        topic,
        "--to-earliest",
        "-o",
        "json",
        env=env,
        stdin="y\n",
    )
    assert done.code == 0, done.stderr
    # The plan was shown with the question (stderr); stdout is the result alone.
    assert "committed before" in done.stderr
    assert {r["after"] for r in done.json()} == {0}
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


async def test_admin_lag_shows_each_service_group_of_the_running_stack(stack: Stack) -> None:
    from tocsin_common.topics import CONSUMER_GROUPS

    await new_incident(stack)  # escalation and correlation have consumed and committed
    deadline = time.monotonic() + 30
    while True:
        result = await tocsin("admin", "lag", "-o", "json", env=kafka_env())
        assert result.code == 0, result.stderr
        rows = {(r["group"], r["topic"]): r for r in result.json()}
        escalation = rows[("tocsin-escalation", "incidents.events")]
        if escalation["committed"] > 0:
            break
        assert time.monotonic() < deadline, escalation
        await asyncio.sleep(0.5)
    assert set(rows) == {(g.group_id, t) for g in CONSUMER_GROUPS for t in g.topics}
    assert escalation["service"] == "escalation" and escalation["partitions"] == 12
    assert 0 <= escalation["lag"] <= escalation["end"]
    table = await tocsin("admin", "lag", env=kafka_env())
    assert any(
        line.split()[:3] == ["tocsin-escalation", "escalation", "incidents.events"]
        for line in table.stdout.splitlines()
    )


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


# ---------------------------------------------------------------------------------------------
# Against the api
# ---------------------------------------------------------------------------------------------

CLI_KEY = "itclisvc000000000000000000000001"  # stack_config/75-cli.yaml's cli-svc


def api_env(stack: Stack, token: str, home: Path) -> dict[str, str]:
    """A person's shell: their own (empty) config dir, the api's URL and their token."""
    return {
        "XDG_CONFIG_HOME": str(home),
        "TOCSIN_API_URL": stack.api_url,
        "TOCSIN_TOKEN": token,
        "TOCSIN_KAFKA_BOOTSTRAP": stack.bootstrap,
    }


async def new_incident(stack: Stack) -> dict[str, Any]:
    """An incident of cli-svc, triggered through ingest, once the api lists it."""
    title = await trigger(stack, f"cli test {uuid.uuid4().hex[:8]}", key=CLI_KEY)
    async with client(stack) as api:
        return await incident_titled(api, title, "cli-svc")


async def shown(env: Mapping[str, str], incident_id: str) -> dict[str, Any]:
    result = await tocsin("incidents", "show", incident_id, "-o", "json", env=env)
    assert result.code == 0, result.stderr
    return dict(result.json())


async def until_shown(
    env: Mapping[str, str], incident_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        incident = await shown(env, incident_id)
        if incident["status"] == status:
            return incident
        assert time.monotonic() < deadline, f"{incident_id} not {status}: {incident}"
        await asyncio.sleep(0.3)


async def test_login_whoami_logout_and_the_credentials_file(stack: Stack, tmp_path: Path) -> None:
    token, _ = await stack.token_for("cli-resp")
    env = {"XDG_CONFIG_HOME": str(tmp_path)}  # no TOCSIN_TOKEN: the file is used

    refused = await tocsin("login", "--api-url", stack.api_url, "--token", "tocsin_wrong", env=env)
    assert refused.code == 3, refused.stderr
    assert refused.stderr.startswith("tocsin: 401")
    assert not (tmp_path / "tocsin" / "credentials.yaml").exists()  # nothing kept

    login = await tocsin("login", "--api-url", stack.api_url, "--token", token, env=env)
    assert login.code == 0, login.stderr
    assert "as cli-resp" in login.stderr
    credentials = tmp_path / "tocsin" / "credentials.yaml"
    assert credentials.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load((tmp_path / "tocsin" / "config.yaml").read_text())
    assert config["profiles"]["default"]["api_url"] == stack.api_url

    me = await tocsin("whoami", "-o", "json", env=env)
    assert me.code == 0, me.stderr
    assert (me.json()["id"], me.json()["team_roles"]) == ("cli-resp", {"cli-team": "responder"})
    table = await tocsin("whoami", env=env)
    assert "Cai Responder" in table.stdout

    # Others may read the file: refused, as ssh refuses such a key.
    credentials.chmod(0o644)
    too_open = await tocsin("whoami", env=env)
    assert too_open.code == 3
    assert f"permissions 0644 for {credentials} are too open" in too_open.stderr
    credentials.chmod(0o600)

    # TOCSIN_TOKEN wins over the file; --api-url over TOCSIN_API_URL.
    admin = await tocsin(
        "--api-url",
        stack.api_url,
        "whoami",
        "-o",
        "json",
        env={**env, "TOCSIN_TOKEN": stack.admin_token, "TOCSIN_API_URL": "http://127.0.0.1:1"},
    )
    assert admin.code == 0, admin.stderr
    assert admin.json()["id"] != "cli-resp"

    assert (await tocsin("logout", env=env)).code == 0
    after = await tocsin("whoami", env=env)
    assert after.code == 3
    assert "not logged in" in after.stderr

    down = await tocsin(
        "whoami", env={**env, "TOCSIN_TOKEN": token, "TOCSIN_API_URL": "http://127.0.0.1:1"}
    )
    assert down.code == 6
    assert "cannot reach the api at http://127.0.0.1:1" in down.stderr


async def test_incidents_list_show_and_act_one_by_one(stack: Stack, tmp_path: Path) -> None:
    token, _ = await stack.token_for("cli-resp")
    env = api_env(stack, token, tmp_path)
    incident = await new_incident(stack)
    iid = incident["id"]

    listed = await tocsin(
        "incidents", "list", "--service", "cli-svc", "--status", "triggered", "-o", "json", env=env
    )
    assert listed.code == 0, listed.stderr
    assert iid in [i["id"] for i in listed.json()]
    assert all(i["status"] == "triggered" and i["service_id"] == "cli-svc" for i in listed.json())
    as_yaml = await tocsin("incidents", "list", "--service", "cli-svc", "-o", "yaml", env=env)
    assert iid in [i["id"] for i in yaml.safe_load(as_yaml.stdout)]
    table = await tocsin("incidents", "list", "--service", "cli-svc", env=env)
    header = table.stdout.splitlines()[0].split()
    assert header[:4] == ["id", "status", "urgency", "service"]
    assert any(
        line.startswith(iid) and incident["title"] in line for line in table.stdout.splitlines()
    )

    acked = await tocsin("incidents", "ack", iid, "-o", "json", env=env)
    assert acked.code == 0, acked.stderr
    assert [(r["id"], r["status"]) for r in acked.json()] == [(iid, 202)]
    await until_shown(env, iid, "acknowledged")

    note = await tocsin("incidents", "note", iid, "rolled back the deploy", env=env)
    assert note.code == 0, note.stderr
    snoozed = await tocsin("incidents", "snooze", iid, "--duration", "30m", env=env)
    assert snoozed.code == 0, snoozed.stderr
    assert "done" in snoozed.stdout
    reassigned = await tocsin("incidents", "reassign", iid, "--user", "cli-mgr", env=env)
    assert reassigned.code == 0, reassigned.stderr

    deadline = time.monotonic() + 30
    while True:
        detail = await shown(env, iid)
        types = [e["type"] for e in detail["log_entries"]]
        if (
            detail["assigned_user_id"] == "cli-mgr"
            and detail["snoozed_until"]
            and any(e["message"] == "rolled back the deploy" for e in detail["log_entries"])
        ):
            break
        assert time.monotonic() < deadline, detail
        await asyncio.sleep(0.3)
    assert types[0] == "triggered" and "acknowledged" in types
    ack = next(e for e in detail["log_entries"] if e["type"] == "acknowledged")
    assert ack["actor"] == "cli-resp"  # the CLI's token is the actor

    text = await tocsin("incidents", "show", iid, env=env)
    assert "timeline" in text.stdout and "rolled back the deploy" in text.stdout

    resolved = await tocsin("incidents", "resolve", iid, env=env)
    assert resolved.code == 0, resolved.stderr
    await until_shown(env, iid, "resolved")

    # Resolving it again is accepted as a no-op (the command is idempotent), not an error.
    again = await tocsin("incidents", "resolve", iid, "-o", "json", env=env)
    assert again.code == 0, again.stderr
    assert [(r["id"], r["status"]) for r in again.json()] == [(iid, 202)]
    assert (await shown(env, iid))["status"] == "resolved"

    missing = await tocsin("incidents", "show", "no-such-incident", env=env)
    assert missing.code == 4
    assert missing.stderr.startswith("tocsin: 404")
    assert len(missing.stderr.strip().splitlines()) == 1

    usage = await tocsin("incidents", "ack", env=env)
    assert usage.code == 2 and "which incidents?" in usage.stderr
    bad_option = await tocsin("incidents", "list", "--status", "sleeping", env=env)
    assert bad_option.code == 2
    bad_time = await tocsin("incidents", "list", "--since", "yesterday", env=env)
    assert bad_time.code == 2 and "--since 'yesterday'" in bad_time.stderr

    # The api refuses a snooze over its limit: one line naming the field.
    too_long = await tocsin("incidents", "snooze", iid, "--duration", "520w", env=env)
    assert too_long.code == 1, too_long.stderr
    assert "duration_seconds" in too_long.stderr
    assert len(too_long.stderr.strip().splitlines()) == 1


async def test_bulk_acknowledge_by_filter_asks_first(stack: Stack, tmp_path: Path) -> None:
    token, _ = await stack.token_for("cli-resp")
    env = api_env(stack, token, tmp_path)
    ids = {(await new_incident(stack))["id"] for _ in range(3)}

    declined = await tocsin("incidents", "ack", "--service", "cli-svc", env=env, stdin="n\n")
    assert declined.code == 1
    assert "acknowledge these" in declined.stderr
    for iid in ids:
        assert (await shown(env, iid))["status"] == "triggered"

    done = await tocsin(
        "incidents",
        "ack",
        "--service",
        "cli-svc",
        "--status",
        "triggered",
        "-o",
        "json",
        env=env,
        stdin="y\n",
    )
    assert done.code == 0, done.stderr
    assert all(iid in done.stderr for iid in ids)  # the matches, shown with the question
    assert ids <= {r["id"] for r in done.json()}
    for iid in ids:
        await until_shown(env, iid, "acknowledged")

    resolved = await tocsin(
        "incidents", "resolve", "--service", "cli-svc", "--yes", "-o", "json", env=env
    )
    assert resolved.code == 0, resolved.stderr
    outcomes = {r["id"]: r["status"] for r in resolved.json()}
    assert ids <= set(outcomes) and {outcomes[i] for i in ids} == {202}
    for iid in ids:
        await until_shown(env, iid, "resolved")

    nothing = await tocsin(
        "incidents", "ack", "--service", "cli-svc", "--status", "triggered", "--yes", env=env
    )
    assert nothing.code == 0 and "nothing to do" in nothing.stdout
    nothing_json = await tocsin(
        "incidents",
        "ack",
        "--service",
        "cli-svc",
        "--status",
        "triggered",
        "--yes",
        "-o",
        "json",
        env=env,
    )
    assert nothing_json.json() == []

    both = await tocsin("incidents", "ack", "x", "--service", "cli-svc", env=env)
    assert both.code == 2


async def test_a_filter_action_refuses_an_incident_changed_after_the_list(
    stack: Stack, tmp_path: Path
) -> None:
    """The person sees the matches and is asked; meanwhile someone acknowledges one of them.
    Resolving "these" incidents then refuses that one (412), as the bulk endpoint checks the
    ETag each had when listed: it is not resolved blind."""
    token, _ = await stack.token_for("cli-resp")
    env = api_env(stack, token, tmp_path)
    incident = await new_incident(stack)
    proc = await asyncio.create_subprocess_exec(
        TOCSIN,
        "incidents",
        "resolve",
        "--service",
        "cli-svc",
        "--status",
        "triggered",
        "-o",
        "json",
        env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    shown_before = b""
    while b"resolve these" not in shown_before:
        chunk = await asyncio.wait_for(proc.stderr.read(200), 30)
        assert chunk, shown_before
        shown_before += chunk
    assert incident["id"].encode() in shown_before
    async with client(stack, token) as api:
        assert (await api.post(f"/incidents/{incident['id']}/acknowledge")).status_code == 202
    await until_shown(env, incident["id"], "acknowledged")
    out, err = await asyncio.wait_for(proc.communicate(b"y\n"), 30)
    outcomes = {r["id"]: r for r in json.loads(out)}
    assert outcomes[incident["id"]]["status"] == 412, outcomes
    if len(outcomes) == 1:
        assert proc.returncode == 5, err.decode()  # docs/cli.md: conflict
    assert (await shown(env, incident["id"]))["status"] == "acknowledged"  # not resolved


async def test_oncall_schedules_and_overrides(stack: Stack, tmp_path: Path) -> None:
    token, _ = await stack.token_for("cli-mgr")
    env = api_env(stack, token, tmp_path)

    oncall = await tocsin("oncall", "--schedule", "cli-rota", "-o", "json", env=env)
    assert oncall.code == 0, oncall.stderr
    assert {o["user_id"] for o in oncall.json()} <= {"cli-resp", "cli-mgr"} and oncall.json()
    table = await tocsin("oncall", "--schedule", "cli-rota", env=env)
    assert table.stdout.splitlines()[0].split()[:2] == ["user", "schedule"]

    schedules = await tocsin("schedule", "list", "-o", "json", env=env)
    assert "cli-rota" in [s["id"] for s in schedules.json()]
    shown_schedule = await tocsin(
        "schedule", "show", "cli-rota", "--days", "3", "-o", "json", env=env
    )
    assert shown_schedule.code == 0, shown_schedule.stderr
    spans = shown_schedule.json()["final_schedule"]
    assert spans and {u for s in spans for u in s["user_ids"]} == {"cli-resp", "cli-mgr"}
    as_table = await tocsin("schedule", "show", "cli-rota", "--days", "3", env=env)
    assert "cli-resp" in as_table.stdout and "cli-mgr" in as_table.stdout

    now_on = next(o["user_id"] for o in oncall.json())
    other = "cli-mgr" if now_on == "cli-resp" else "cli-resp"
    created = await tocsin(
        "schedule",
        "override",
        "cli-rota",
        "--user",
        other,
        "--duration",
        "1h",
        "-o",
        "json",
        env=env,
    )
    assert created.code == 0, created.stderr
    override = created.json()
    assert (override["user_id"], override["schedule_id"]) == (other, "cli-rota")
    covered = await tocsin("oncall", "--schedule", "cli-rota", "-o", "json", env=env)
    assert [o["user_id"] for o in covered.json()] == [other]

    deleted = await tocsin("schedule", "override", "cli-rota", "--delete", override["id"], env=env)
    assert deleted.code == 0, deleted.stderr
    back = await tocsin("oncall", "--schedule", "cli-rota", "-o", "json", env=env)
    assert [o["user_id"] for o in back.json()] == [now_on]

    usage = await tocsin("schedule", "override", "cli-rota", "--user", other, env=env)
    assert usage.code == 2 and "--end or --duration" in usage.stderr
    missing = await tocsin("schedule", "show", "no-such-schedule", env=env)
    assert missing.code == 4, missing.stderr


async def test_silences_with_amtool_matchers(stack: Stack, tmp_path: Path) -> None:
    token, _ = await stack.token_for("cli-mgr")
    env = api_env(stack, token, tmp_path)
    added = await tocsin(
        "silence",
        "add",
        "alertname=DiskFull",
        'instance=~"web.*"',
        "--service",
        "cli-svc",
        "--duration",
        "2h",
        "--comment",
        "disk swap",
        env=env,
    )
    assert added.code == 0, added.stderr
    silence_id = added.stdout.strip()
    assert silence_id and len(added.stdout.splitlines()) == 1  # just the id, as amtool

    listed = await tocsin("silence", "list", "-o", "json", env=env)
    mine = next(s for s in listed.json() if s["id"] == silence_id)
    assert mine["matchers"] == ['alertname="DiskFull"', 'instance=~"web.*"']
    assert mine["comment"] == "disk swap" and mine["created_by"] == "cli-mgr"
    table = await tocsin("silence", "list", env=env)
    assert silence_id in table.stdout

    expired = await tocsin("silence", "expire", silence_id, env=env)
    assert expired.code == 0, expired.stderr
    after = await tocsin("silence", "list", "-o", "json", env=env)
    assert silence_id not in [s["id"] for s in after.json()]

    bad = await tocsin("silence", "add", 'instance=~"(web"', "--comment", "x", env=env)
    assert bad.code == 2
    assert "matcher" in bad.stderr and "invalid regular expression" in bad.stderr
    gone = await tocsin("silence", "expire", "no-such-silence", env=env)
    assert gone.code == 4, gone.stderr


async def _read_json_lines(stream: asyncio.StreamReader, count: int, timeout: float) -> list[Any]:
    lines: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(lines)} of {count} events: {lines}"
        line = await asyncio.wait_for(stream.readline(), remaining)
        assert line, f"tail ended after {len(lines)} events"
        lines.append(json.loads(line))
    return lines


async def test_tail_follows_and_resumes_across_an_api_restart(stack: Stack, tmp_path: Path) -> None:
    token, _ = await stack.token_for("cli-resp")
    env = {**os.environ, **api_env(stack, token, tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        TOCSIN,
        "tail",
        "--service",
        "cli-svc",
        "-o",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        connected = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert connected.startswith("following "), connected
        first = await new_incident(stack)
        (opened,) = await _read_json_lines(proc.stdout, 1, 30)
        assert opened["event"] == "incident" and opened["id"]
        assert opened["data"]["incident"]["id"] == first["id"]
        assert opened["data"]["type"] == "triggered"

        # The api goes away; while it is down an incident is acknowledged (gRPC, as the
        # api would); tail reconnects with Last-Event-ID and gets it, and nothing twice.
        api = stack.services["api"]
        api.kill()
        stub = incident_service_pb2_grpc.IncidentServiceStub(stack.channel("escalation"))
        await stub.Acknowledge(incident_service_pb2.IncidentRef(incident_id=first["id"]))
        api.start()
        await api.wait_healthy()
        # It reconnects from the last event it printed (the first incident's, or a later one
        # such as its escalation), every attempt from that same one.
        resumed_from: set[str] = set()
        while "following" not in (
            line := (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        ):
            assert "; reconnecting after event " in line, line
            resumed_from.add(line.strip().rsplit(" ", 1)[-1])
        assert len(resumed_from) == 1, resumed_from
        (resume_id,) = resumed_from
        assert line.strip().endswith(f"from event {resume_id}"), line
        second = await new_incident(stack)
        wanted = {("acknowledged", first["id"]), ("triggered", second["id"])}
        events: list[Any] = []
        deadline = time.monotonic() + 60
        while not wanted <= {(e["data"]["type"], e["data"]["incident"]["id"]) for e in events}:
            events += await _read_json_lines(proc.stdout, 1, deadline - time.monotonic())
        seen = [(e["data"]["type"], e["data"]["incident"]["id"]) for e in events]
        # The acknowledgement made while the api was down came before the new incident,
        # and nothing was repeated (the triggered event of the first incident included).
        assert seen.index(("acknowledged", first["id"])) < seen.index(("triggered", second["id"]))
        ids = [opened["id"], *(e["id"] for e in events)]
        assert len(set(ids)) == len(ids), ids
        assert resume_id in ids  # an event it had printed
        after_resume = seen[ids.index(resume_id) :]
        assert ("acknowledged", first["id"]) in after_resume
        assert ("triggered", first["id"]) not in seen
    finally:
        proc.terminate()
        await proc.wait()


async def _until_done(stack: Stack, run: asyncio.Future[Run], key: str = CLI_KEY) -> Run:
    """``run`` (a tail waiting for changes), with a new incident every 2 s until it ends."""
    deadline = time.monotonic() + 60
    while not run.done():
        assert time.monotonic() < deadline, "tail saw no change in 60 s"
        await trigger(stack, f"cli tail {uuid.uuid4().hex[:8]}", key=key)
        await asyncio.wait({run}, timeout=2)
    return run.result()


async def test_tail_stops_after_count(stack: Stack, tmp_path: Path) -> None:
    token, _ = await stack.token_for("cli-resp")
    env = api_env(stack, token, tmp_path)
    run = asyncio.ensure_future(tocsin("tail", "--service", "cli-svc", "--count", "1", env=env))
    result = await _until_done(stack, run)
    assert result.code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert "cli-svc" in result.stdout and "cli tail" in result.stdout


# ---------------------------------------------------------------------------------------------
# The documentation's examples
# ---------------------------------------------------------------------------------------------

CHECKOUT_KEY = "itcheckout0000000000000000000001"  # stack_config/00-skeleton.yaml's checkout
_EXIT_NOTE = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")


@dataclass(frozen=True)
class Example:
    line: str  # a shell command line starting with `tocsin`
    code: int  # the exit code it must give (a trailing `# exit N`; 0 without)


def examples(markdown: str) -> list[Example]:
    """The `tocsin ...` lines of the ```sh blocks of a Markdown page, in order (```text
    blocks show output or need a person: they are not run)."""
    found = []
    in_sh = False
    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_sh = line == "```sh" if not in_sh else False
            continue
        if in_sh and line.startswith("tocsin "):
            note = _EXIT_NOTE.search(line)
            code = int(note.group(1)) if note else 0
            found.append(Example(_EXIT_NOTE.sub("", line), code))
    return found


def test_examples_are_found_in_the_docs() -> None:
    text = "```sh\ntocsin a\nnot me\ntocsin b  # exit 4\n```\n```text\ntocsin c\n```\ntocsin d\n"
    assert examples(text) == [Example("tocsin a", 0), Example("tocsin b", 4)]


async def _run_line(line: str, env: Mapping[str, str]) -> Run:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line,
        env={**os.environ, **env},
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_the_docs_examples_run_as_documented(stack: Stack, tmp_path: Path) -> None:
    """Every `tocsin` line of docs/cli.md's ```sh blocks, run by bash as written, gives the
    exit code the page says, against this stack (its checkout service and primary schedule,
    as in the example config)."""
    title = await trigger(stack, f"docs example {uuid.uuid4().hex[:8]}", key=CHECKOUT_KEY)
    async with client(stack) as api:
        incident = await incident_titled(api, title, "checkout")
    env = {
        **api_env(stack, stack.admin_token, tmp_path),
        "PATH": f"{Path(TOCSIN).parent}:{os.environ['PATH']}",
        "INCIDENT": incident["id"],
        "RESPONDER": "alice",
        "SCHEDULE": "primary",
    }
    silence = await tocsin(
        "silence",
        "add",
        "alertname=DocsExample",
        "--service",
        "checkout",
        "--comment",
        "docs",
        env=env,
    )
    assert silence.code == 0, silence.stderr
    env["SILENCE"] = silence.stdout.strip()
    # A public component of this stack's status page (the example config's are payments and
    # storefront), and a subscription of it to end.
    env["COMPONENT"] = "sp-pay"
    made = await tocsin(
        "subscribers", "add", "--email", "docs@example.com", "-c", "sp-pay", "-o", "json", env=env
    )
    assert made.code == 0, made.stderr
    env["SUBSCRIPTION"] = json.loads(made.stdout)["subscription_id"]
    try:
        await _run_docs_examples(stack, env)
    finally:
        # The examples' subscriptions would hear later tests' status updates.
        async with client(stack) as api:
            listed = await api.get("/status_page/subscriptions")
            for sub in listed.json()["subscriptions"]:
                if sub["address"] in ("ana@example.com", "https://hooks.example.com/status"):
                    await api.delete(f"/status_page/subscriptions/{sub['subscription_id']}")


async def _run_docs_examples(stack: Stack, env: dict[str, str]) -> None:
    lines = examples((ROOT / "docs" / "cli.md").read_text())
    assert len(lines) >= 20, lines
    for example in lines:
        if example.line.startswith("tocsin tail"):
            # It waits for the next change: make one.
            result = await _until_done(
                stack, asyncio.ensure_future(_run_line(example.line, env)), CHECKOUT_KEY
            )
        else:
            result = await _run_line(example.line, env)
        assert result.code == example.code, (
            f"docs/cli.md: `{example.line}` exited {result.code}, the page says {example.code}:"
            f"\n{result.stdout}\n{result.stderr}"
        )
        if " -o json" in example.line and example.code == 0:
            json.loads(result.stdout)  # what the page calls JSON parses


async def test_the_readme_acknowledges_the_example_incident(stack: Stack, tmp_path: Path) -> None:
    """README's Try it: after the alert, its `tocsin incidents` lines list and acknowledge
    the checkout incident (the login line reads make up's token file; here the stack's)."""
    title = await trigger(stack, f"readme example {uuid.uuid4().hex[:8]}", key=CHECKOUT_KEY)
    async with client(stack) as api:
        incident = await incident_titled(api, title, "checkout")
    readme = (ROOT / "README.md").read_text()
    try_it = readme[readme.index("## Try it") : readme.index("## The repository")]
    lines = [e.line for e in examples(try_it)]
    assert any(line.startswith("tocsin login") for line in lines)
    assert "tocsin incidents ack --service checkout --status triggered --yes" in lines
    env = {
        **api_env(stack, stack.admin_token, tmp_path),
        "PATH": f"{Path(TOCSIN).parent}:{os.environ['PATH']}",
    }
    for line in lines:
        if line.startswith("tocsin login"):
            continue
        result = await _run_line(line, env)
        assert result.code == 0, f"README: `{line}`: {result.stderr}"
    deadline = time.monotonic() + 30
    while (await shown(env, incident["id"]))["status"] != "acknowledged":
        assert time.monotonic() < deadline, "README's tocsin lines did not acknowledge it"
        await asyncio.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# tocsin report: GET /analytics/incidents, insight's figures through the api
# ---------------------------------------------------------------------------------------------


async def test_report_prints_the_kpis_of_a_driven_incident(stack: Stack, tmp_path: Path) -> None:
    incident = await new_incident(stack)
    created = datetime.fromisoformat(incident["created_at"].replace("Z", "+00:00"))
    env = api_env(stack, (await stack.token_for("cli-resp"))[0], tmp_path)
    await asyncio.sleep(max(0.0, 2.0 - (datetime.now(created.tzinfo) - created).total_seconds()))
    assert (await tocsin("incidents", "ack", incident["id"], env=env)).code == 0
    await until_shown(env, incident["id"], "acknowledged")
    assert (await tocsin("incidents", "resolve", incident["id"], env=env)).code == 0
    await until_shown(env, incident["id"], "resolved")

    # This incident alone (its service, the second it opened in), by service and person.
    window = [
        "--service", "cli-svc",
        "--since", created.isoformat(),
        "--until", (created + timedelta(seconds=1)).isoformat(),
        "--group-by", "service", "--group-by", "user",
    ]  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        as_json = await tocsin("report", *window, "-o", "json", env=env)
        assert as_json.code == 0, as_json.stderr
        rows = as_json.json()["data"]
        if rows and rows[0]["seconds_to_resolve"]["count"] == 1:
            break
        assert time.monotonic() < deadline, f"not in the report: {as_json.stdout}"
        await asyncio.sleep(0.3)
    (row,) = rows
    assert (row["service_id"], row["user_id"], row["total_incident_count"]) == (
        "cli-svc",
        "cli-resp",
        1,
    )
    ack = row["seconds_to_first_ack"]["mean"]
    assert 1.5 <= ack <= 6, row

    table = await tocsin("report", *window, "--kpi", "seconds_to_first_ack", env=env)
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "service_id", "user_id", "incidents", "kpi", "count", "mean", "p50", "p90", "p95", "max"
    ]  # fmt: skip
    cells = lines[2].split()
    assert cells[:5] == ["cli-svc", "cli-resp", "1", "first_ack", "1"]
    assert cells[5] == f"{round(ack)}s"  # a duration a person reads

    # A responder reads their team's figures, not every team's (a manager's question).
    everyone = await tocsin("report", env=env)
    assert everyone.code == 3 and everyone.stderr.startswith("tocsin: 403"), everyone.stderr
    refused = await tocsin("report", "--service", "cli-svc", env={**env, "TOCSIN_TOKEN": "nope"})
    assert refused.code == 3 and refused.stderr.startswith("tocsin: 401")
    bad = await tocsin("report", "--group-by", "planet", env=env)
    assert bad.code == 2 and "--group-by 'planet'" in bad.stderr
    zone = await tocsin("report", "--service", "cli-svc", "--time-zone", "Mars/Base", env=env)
    assert zone.code == 1 and "time_zone" in zone.stderr, zone.stderr


# ---------------------------------------------------------------------------------------------
# The device flow of `tocsin login`, against a provider stand-in that speaks RFC 8628 (the
# provider process of test_oidc.py offers no device grant; the browser login is tested
# there). The ID token is the stand-in's, so the login is saved without --verify.
# ---------------------------------------------------------------------------------------------


async def test_login_with_the_device_flow(tmp_path: Path) -> None:
    from aiohttp import web

    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    polls: list[dict[str, str]] = []
    id_token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2ln"

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "device_authorization_endpoint": f"{issuer}/device",
            }
        )

    async def device(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["client_id"] == "tocsin-cli" and "openid" in str(form["scope"]).split()
        return web.json_response(
            {
                "device_code": "dev-1",
                "user_code": "WDJB-MJHT",
                "verification_uri": f"{issuer}/activate",
                "expires_in": 60,
                "interval": 1,
            }
        )

    async def token(request: web.Request) -> web.Response:
        polls.append({k: str(v) for k, v in (await request.post()).items()})
        if len(polls) < 2:  # the person has not approved yet
            return web.json_response({"error": "authorization_pending"}, status=400)
        return web.json_response(
            {"id_token": id_token, "access_token": "at", "refresh_token": "rt", "expires_in": 3600}
        )

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_post("/device", device)
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    try:
        login = await tocsin(
            "login",
            "--api-url",
            "http://127.0.0.1:1",
            "--issuer",
            issuer,
            "--client-id",
            "tocsin-cli",
            "--no-verify",
            env=env,
        )
    finally:
        await runner.cleanup()
    assert login.code == 0, login.stderr
    assert f"open {issuer}/activate and enter the code WDJB-MJHT" in login.stderr
    assert [p["grant_type"] for p in polls] == ["urn:ietf:params:oauth:grant-type:device_code"] * 2
    assert {p["device_code"] for p in polls} == {"dev-1"}
    stored = yaml.safe_load((tmp_path / "tocsin" / "credentials.yaml").read_text())["default"]
    assert (stored["token"], stored["kind"], stored["refresh_token"]) == (id_token, "oidc", "rt")
    assert (tmp_path / "tocsin" / "credentials.yaml").stat().st_mode & 0o777 == 0o600
    profile = yaml.safe_load((tmp_path / "tocsin" / "config.yaml").read_text())["profiles"]
    assert (profile["default"]["oidc_issuer"], profile["default"]["oidc_client_id"]) == (
        issuer,
        "tocsin-cli",
    )
