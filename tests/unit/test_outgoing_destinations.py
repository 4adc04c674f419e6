"""The outgoing destination policy (pure): which resolved addresses a request may reach,
the allow-list's syntax, and the config fields that carry it."""

from __future__ import annotations

import pytest
from tocsin_common.config import ConfigError, parse_config
from tocsin_common.outgoing import DestinationPolicy, DestinationRefused, parse_allow_rule


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 form of 169.254.169.254
        ("2002:7f00:1::1", "loopback"),  # 6to4 form of 127.0.0.1
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.1", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "not a public address"),  # documentation range
        ("198.18.0.1", "not a public address"),  # benchmarking range
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, reason: str) -> None:
    refused = DestinationPolicy().refusal(address, 443, "hooks.example.com")
    assert refused is not None, address
    assert reason in refused.reason
    # The message names the host, the address, the port and where to allow it.
    assert "hooks.example.com" in str(refused) and "port 443" in str(refused)
    assert "notification.outgoing.allow" in str(refused)
    with pytest.raises(DestinationRefused):
        DestinationPolicy().check(address, 443)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "52.95.110.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert DestinationPolicy().refusal(address, 443) is None


def test_the_allow_list_matches_by_cidr_and_port() -> None:
    policy = DestinationPolicy(["127.0.0.1:9999", "10.0.0.0/8", "192.168.5.0/24:8443", "[::1]:80"])
    assert policy.refusal("127.0.0.1", 9999) is None
    assert policy.refusal("127.0.0.1", 9998) is not None  # that port only
    assert policy.refusal("127.0.0.2", 9999) is not None  # that address only
    assert policy.refusal("10.200.3.4", 1) is None  # every port of the network
    assert policy.refusal("192.168.5.77", 8443) is None
    assert policy.refusal("192.168.5.77", 443) is not None
    assert policy.refusal("192.168.6.1", 8443) is not None
    assert policy.refusal("::1", 80) is None
    assert policy.refusal("::ffff:127.0.0.1", 9999) is None  # the mapped form of an allowed one
    assert policy.refusal("169.254.169.254", 80) is not None  # never allowed by the others


def test_allow_list_entries_must_be_addresses_or_networks() -> None:
    assert str(parse_allow_rule("127.0.0.1:9999")) == "127.0.0.1:9999"
    assert str(parse_allow_rule("[::1]:9999")) == "[::1]:9999"
    assert str(parse_allow_rule("fd00::/8")) == "fd00::/8"
    for bad, says in [
        ("hooks.example.com", "host names are not accepted"),
        ("localhost:9999", "host names are not accepted"),
        ("127.0.0.1:99999", "port"),
        ("127.0.0.1:x", "port"),
        ("[::1", "without ']'"),
        ("10.0.0.0/33", "not an IP address"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_allow_rule(bad)


def test_an_unparseable_address_is_refused() -> None:
    refused = DestinationPolicy(["0.0.0.0/0"]).refusal("not-an-ip", 80)
    assert refused is not None and "not an IP address" in refused.reason


# --- the config fields --------------------------------------------------------------------

USERS = """
version: 1
users:
  - id: alice
    name: Alice
    email: alice@example.com
    contact_methods:
      - {id: hook, type: webhook, address: "https://hooks.example.com/a"%s}
"""


def test_the_allow_list_is_checked_at_config_load() -> None:
    config = parse_config('version: 1\nnotification: {outgoing: {allow: ["127.0.0.1:9999"]}}\n')
    assert config.notification.outgoing.allow == ("127.0.0.1:9999",)
    with pytest.raises(ConfigError) as e:
        parse_config('version: 1\nnotification: {outgoing: {allow: ["intranet.local"]}}\n')
    assert "notification.outgoing.allow[0]" in str(e.value)
    assert "host names are not accepted" in str(e.value)


def test_a_webhook_without_a_signing_secret_is_refused_at_load_unless_unsigned() -> None:
    no_secret = 'notification: {webhook: {signing_secret_env: ""}}\n'
    with pytest.raises(ConfigError) as e:
        parse_config(USERS % "" + no_secret)
    message = str(e.value)
    assert "users[0].contact_methods[0].unsigned" in message
    assert "'hook' would be sent unsigned" in message and "unsigned: true" in message
    config = parse_config(USERS % ", unsigned: true" + no_secret)
    assert config.user("alice").contact_methods[0].unsigned
    # With a secret variable named (the default), a signed webhook loads; the variable
    # itself is checked by notification at start (tests/unit/test_notification_outgoing.py).
    assert not parse_config(USERS % "").user("alice").contact_methods[0].unsigned


def test_only_a_webhook_can_be_unsigned() -> None:
    text = USERS.replace("type: webhook", "type: slack") % ", unsigned: true"
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert "users[0].contact_methods[0].unsigned" in str(e.value)
    assert "only a webhook contact method can be unsigned" in str(e.value)
