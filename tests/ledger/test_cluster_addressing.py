"""How farebox addresses a Redis Cluster: the URL forms, the settings that name one, and the
slot of a key or of a command already in the Redis protocol."""

from __future__ import annotations

import pytest

from proxy.ledger.cluster import parse_cluster_url
from proxy.ledger.pipe import pack_command
from proxy.ledger.slots import command_key, key_slot
from proxy.settings import SettingsError, load_settings


def test_slots_are_crc16_of_the_hash_tag_or_of_the_whole_key():
    assert key_slot("123456789") == 12739             # the cluster specification's check value
    assert key_slot("fb:{acme}:events") == key_slot("acme") == key_slot(b"fb:{acme}:budget:agent:x")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}".encode())   # an empty tag: the whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")


@pytest.mark.parametrize("args,key", [
    (("EVALSHA", "0" * 40, "2", "fb:{a}:x", "fb:{a}:y", "arg"), b"fb:{a}:x"),
    (("EVAL", "return 1", "1", "k"), b"k"),
    (("EVALSHA", "0" * 40, "0", "arg"), None),
    (("SADD", "fb:projects", "a", "b"), b"fb:projects"),
    (("PING",), None),
])
def test_the_first_key_of_a_packed_command(args, key):
    assert command_key(pack_command(args)) == key


def test_cluster_urls_name_the_nodes_to_start_from_and_the_credentials():
    assert parse_cluster_url("redis+cluster://10.0.0.5:7000") == ([("10.0.0.5", 7000)], None, None)
    assert parse_cluster_url("redis+cluster://u:p%40ss@a:7000,b:7001/0") == ([("a", 7000), ("b", 7001)], "u", "p@ss")
    assert parse_cluster_url("redis+cluster://:secret@a") == ([("a", 6379)], None, "secret")
    assert parse_cluster_url("redis+cluster://[::1]:7000") == ([("::1", 7000)], None, None)


@pytest.mark.parametrize("url,message", [
    ("redis://a:1", "a Redis Cluster URL starts with redis+cluster://"),
    ("redis+cluster://", "'' is not host:port"),
    ("redis+cluster://a:0", "'a:0' is not host:port"),
    ("redis+cluster://a:x", "'a:x' is not host:port"),
])
def test_a_cluster_url_that_names_no_node_is_refused(url, message):
    with pytest.raises(ValueError) as caught:
        parse_cluster_url(url)
    assert str(caught.value) == message


def test_redis_cluster_makes_a_node_url_a_cluster_url():
    settings = load_settings({"redis_url": "redis://:pw@10.0.0.5:7000/0", "redis_cluster": True}, env={})
    assert settings.redis_target == "redis+cluster://:pw@10.0.0.5:7000"
    assert load_settings({}, env={"REDIS_URL": "redis://h:1", "FAREBOX_REDIS_CLUSTER": "true"}).redis_target == \
        "redis+cluster://h:1"
    assert load_settings({"redis_url": "redis://h:1"}, env={}).redis_target == "redis://h:1"
    assert load_settings({"redis_url": "redis+cluster://h:1,h:2"}, env={}).redis_target == "redis+cluster://h:1,h:2"
    assert load_settings({}, env={}).redis_target is None


@pytest.mark.parametrize("flags,message", [
    ({"redis_cluster": True},
     "invalid setting redis_cluster: needs redis_url set to a node of the cluster, e.g. redis://10.0.0.5:6379"),
    ({"redis_cluster": True, "redis_url": "unix:///run/redis.sock"},
     "invalid setting redis_cluster: needs redis_url set to a node of the cluster, e.g. redis://10.0.0.5:6379"),
    ({"redis_url": "redis+cluster://a:99999"},
     "invalid setting redis_url: not a Redis Cluster URL (redis+cluster://host:port[,host:port...]): "
     "'a:99999' is not host:port"),
    ({"redis_url": "cluster://a:1"},
     "invalid setting redis_url: must start with redis://, rediss://, unix:// or redis+cluster://"),
])
def test_cluster_settings_that_cannot_work_are_refused(flags, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(flags, env={})
    assert str(caught.value) == message
