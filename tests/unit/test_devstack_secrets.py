"""`make up` (tools/devstack.py) hands notification a link secret it generated once per
profile, as a file, unless the shell already names link keys."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from tocsin_notification.links import key_ring_from_env

from tools import devstack


def test_the_link_secret_is_generated_once_per_profile_as_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devstack, "ROOT", tmp_path)
    for name in devstack.LINK_KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    profile = devstack.PROFILES["dev"]
    env = devstack.service_env(profile, "notification", (1, 2, 3), tmp_path / "tocsin.yaml")
    path = Path(env["TOCSIN_LINK_SECRET_FILE"])
    assert path == tmp_path / ".run" / "dev" / "secrets" / "link-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    again = devstack.service_env(profile, "escalation", (4, 5, 0), tmp_path / "tocsin.yaml")
    assert Path(again["TOCSIN_LINK_SECRET_FILE"]).read_text() == first  # kept, not renewed
    assert len(key_ring_from_env(env=env).kids) == 1  # a secret notification accepts


def test_link_keys_from_the_shell_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack, "ROOT", tmp_path)
    monkeypatch.setenv("TOCSIN_LINK_KEYS", "k1:" + "x" * 40)
    env = devstack.service_env(
        devstack.PROFILES["dev"], "notification", (1, 2, 3), tmp_path / "tocsin.yaml"
    )
    assert "TOCSIN_LINK_SECRET_FILE" not in env
    assert key_ring_from_env(env=env).kids == ("k1",)
