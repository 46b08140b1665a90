"""The one KeyStore contract: every key store must pass every test here.

Times are passed explicitly (``now=``), so expiry, revocation and rotation overlaps
are checked at exact instants, with no sleeping. The redis store runs against the
machine's redis-server (127.0.0.1:6379) under a fresh key prefix per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdserve.domain.errors import Conflict, InvalidRequest, NotFound
from sdserve.security.base import KeyStore
from sdserve.security.keys import KeyState, Role, parse_key

STORES = ["memory", "sqlite", "redis"]
T0 = 1_800_000_000.0
REDIS_URL = "redis://127.0.0.1:6379/0"


class _Stores:
    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.path = tmp_path / "sdserve.db"
        self.prefix = f"sdserve-test:{uuid.uuid4().hex}:"
        self.opened: list[KeyStore] = []

    def make(self) -> KeyStore:
        """A new store instance on the same storage (same file, same Redis prefix)."""
        store: KeyStore
        if self.name == "memory":
            from sdserve.security.memory import MemoryKeyStore

            store = MemoryKeyStore()
        elif self.name == "sqlite":
            from sdserve.security.sqlite import SqliteKeyStore

            store = SqliteKeyStore(self.path)
        else:
            from sdserve.security.redis import RedisKeyStore

            store = RedisKeyStore.from_url(REDIS_URL, self.prefix)
        self.opened.append(store)
        return store

    def cleanup(self) -> None:
        if self.name == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{self.prefix}*"):
                client.delete(key)
            client.close()
        for store in self.opened:
            store.close()


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Stores]:
    if request.param == "redis":
        import redis

        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:  # pragma: no cover - the machine runs one
            pytest.skip(f"no redis-server at {REDIS_URL}: {exc}")
    made = _Stores(request.param, tmp_path)
    yield made
    made.cleanup()


@pytest.fixture
def store(stores: _Stores) -> KeyStore:
    return stores.make()


def test_create_then_the_key_authenticates_and_only_its_hash_is_stored(store: KeyStore) -> None:
    issued = store.create("acme", Role.user, name="ci", now=T0)
    key_id, secret = parse_key(issued.key) or ("", "")
    assert issued.key.startswith(f"sk-{issued.record.id}-") and key_id == issued.record.id
    found = store.authenticate(issued.key, now=T0 + 1)
    assert found is not None
    assert (found.id, found.tenant, found.role, found.name) == (key_id, "acme", Role.user, "ci")
    assert secret not in found.model_dump_json() and issued.key not in found.model_dump_json()
    assert "secret_hash" not in found.public(T0)


def test_wrong_malformed_or_unknown_keys_do_not_authenticate(store: KeyStore) -> None:
    a = store.create("acme", Role.user, now=T0)
    b = store.create("acme", Role.user, now=T0)
    a_secret = a.key.split("-", 2)[2]
    b_secret = b.key.split("-", 2)[2]
    flipped = a_secret[:-1] + ("A" if a_secret[-1] != "A" else "B")
    for bad in [
        f"sk-{a.record.id}-{b_secret}",  # another key's secret
        f"sk-{a.record.id}-{flipped}",  # one character off
        f"sk-{'0' * 16}-{a_secret}",  # unknown id
        a.key[:-1],  # truncated
        a.key + "x",
        a.key.upper(),
        "sk-",
        "",
        "Bearer " + a.key,
        a.key.replace("sk-", "pk-", 1),
        "sk-" + "a" * 5000,
    ]:
        assert store.identify(bad) is None, bad
        assert store.authenticate(bad, now=T0) is None, bad


def test_list_all_or_one_tenant_oldest_first_without_secrets(store: KeyStore) -> None:
    first = store.create("acme", Role.admin, now=T0)
    second = store.create("other", Role.reader, now=T0 + 1)
    third = store.create("acme", Role.user, now=T0 + 2)
    assert [r.id for r in store.list_keys()] == [first.record.id, second.record.id, third.record.id]
    assert [r.id for r in store.list_keys("acme")] == [first.record.id, third.record.id]
    assert store.list_keys("nobody") == []
    assert store.get(second.record.id) == second.record
    assert store.get("f" * 16) is None and store.get("../etc") is None
    assert store.has_keys()
    with pytest.raises(InvalidRequest):
        store.list_keys("Not A Tenant")


def test_revoke_is_immediate_and_kept_on_record(store: KeyStore) -> None:
    store.create("ops", Role.admin, now=T0)
    issued = store.create("acme", Role.user, now=T0)
    revoked = store.revoke(issued.record.id, now=T0 + 10)
    assert revoked.revoked_at == T0 + 10
    assert store.authenticate(issued.key, now=T0 + 10) is None
    assert store.authenticate(issued.key, now=T0 + 9) is not None  # before the revocation
    seen = store.identify(issued.key)
    assert seen is not None and seen.state(T0 + 10) is KeyState.revoked
    again = store.revoke(issued.record.id, now=T0 + 20)  # idempotent: first time kept
    assert again.revoked_at == T0 + 10
    with pytest.raises(NotFound):
        store.revoke("0" * 16, now=T0)


def test_the_last_active_admin_key_cannot_be_revoked(store: KeyStore) -> None:
    only = store.create("ops", Role.admin, now=T0)
    store.create("acme", Role.user, now=T0)
    with pytest.raises(Conflict, match="last active admin"):
        store.revoke(only.record.id, now=T0 + 1)
    spare = store.create("ops", Role.admin, now=T0 + 2)
    store.revoke(only.record.id, now=T0 + 3)
    assert store.authenticate(only.key, now=T0 + 3) is None
    assert store.authenticate(spare.key, now=T0 + 3) is not None


def test_rotation_overlaps_then_the_old_key_stops(store: KeyStore) -> None:
    old = store.create("acme", Role.user, name="ci", now=T0)
    new = store.rotate(old.record.id, 600, now=T0 + 100)
    assert new.key != old.key and new.record.id != old.record.id
    assert (new.record.tenant, new.record.role, new.record.name) == ("acme", Role.user, "ci")
    assert store.authenticate(new.key, now=T0 + 100) is not None
    assert store.authenticate(old.key, now=T0 + 699.999) is not None  # inside the overlap
    assert store.authenticate(old.key, now=T0 + 700) is None  # overlap over
    assert store.authenticate(new.key, now=T0 + 10_000) is not None
    retired = store.get(old.record.id)
    assert retired is not None and retired.rotated_to == new.record.id
    assert retired.expires_at == T0 + 700 and retired.state(T0 + 700) is KeyState.expired


def test_rotation_with_no_overlap_ends_the_old_key_at_once(store: KeyStore) -> None:
    old = store.create("acme", Role.user, now=T0)
    new = store.rotate(old.record.id, 0, now=T0 + 5)
    assert store.authenticate(old.key, now=T0 + 5) is None
    assert store.authenticate(new.key, now=T0 + 5) is not None


def test_rotation_never_extends_an_expiring_key(store: KeyStore) -> None:
    old = store.create("acme", Role.user, expires_at=T0 + 50, now=T0)
    store.rotate(old.record.id, 3600, now=T0 + 10)
    retired = store.get(old.record.id)
    assert retired is not None and retired.expires_at == T0 + 50
    assert store.authenticate(old.key, now=T0 + 50) is None


def test_only_an_active_key_can_be_rotated(store: KeyStore) -> None:
    store.create("ops", Role.admin, now=T0)
    dead = store.create("acme", Role.user, now=T0)
    store.revoke(dead.record.id, now=T0 + 1)
    with pytest.raises(Conflict, match="revoked"):
        store.rotate(dead.record.id, 60, now=T0 + 2)
    expired = store.create("acme", Role.user, expires_at=T0 + 5, now=T0)
    with pytest.raises(Conflict, match="expired"):
        store.rotate(expired.record.id, 60, now=T0 + 5)
    with pytest.raises(NotFound):
        store.rotate("0" * 16, 60, now=T0)
    live = store.create("acme", Role.user, now=T0)
    with pytest.raises(InvalidRequest):
        store.rotate(live.record.id, -1, now=T0)


def test_expiry_is_exact(store: KeyStore) -> None:
    issued = store.create("acme", Role.reader, expires_at=T0 + 30, now=T0)
    assert store.authenticate(issued.key, now=T0 + 29.999) is not None
    assert store.authenticate(issued.key, now=T0 + 30) is None
    with pytest.raises(InvalidRequest, match="future"):
        store.create("acme", Role.reader, expires_at=T0, now=T0)


def test_bad_tenants_roles_and_names_are_refused(store: KeyStore) -> None:
    for tenant in ["", "Acme", "a/b", "../x", "a b", "-x", "x" * 64, "é"]:
        with pytest.raises(InvalidRequest) as info:
            store.create(tenant, Role.user, now=T0)
        assert info.value.problems[0].field == "tenant"
    with pytest.raises(ValueError):
        store.create("acme", "root", now=T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        store.create("acme", Role.user, name="n" * 101, now=T0)
    assert not store.has_keys()


def test_registering_given_material(store: KeyStore) -> None:
    issued = store.create("default", Role.admin, material=("0123456789abcdef", "s" * 43), now=T0)
    assert issued.key == "sk-0123456789abcdef-" + "s" * 43
    assert store.authenticate(issued.key, now=T0) is not None
    with pytest.raises(InvalidRequest):
        store.create("default", Role.admin, material=("xyz", "short"), now=T0)


def test_a_new_instance_sees_what_was_stored(stores: _Stores) -> None:
    first = stores.make()
    issued = first.create("acme", Role.user, now=T0)
    first.set_webhook_secret("acme", "enc1:sealed", now=T0)
    again = stores.make()
    if stores.name == "memory":
        assert again.authenticate(issued.key, now=T0) is None  # one instance, one process
        return
    assert again.authenticate(issued.key, now=T0) is not None
    tenant = again.tenant("acme")
    assert tenant is not None and tenant.webhook_secret == "enc1:sealed"


def test_tenant_settings(store: KeyStore) -> None:
    store.create("acme", Role.user, now=T0)
    assert store.tenant("acme") is None  # keys alone make no settings record
    store.set_webhook_secret("beta", "enc1:x", now=T0 + 1)
    assert store.tenants() == ["acme", "beta"]
    beta = store.tenant("beta")
    assert beta is not None and (beta.webhook_secret, beta.updated_at) == ("enc1:x", T0 + 1)
    store.set_webhook_secret("beta", None, now=T0 + 2)
    cleared = store.tenant("beta")
    assert cleared is not None and cleared.webhook_secret is None
    with pytest.raises(InvalidRequest):
        store.set_webhook_secret("Bad Name", "x")
    with pytest.raises(InvalidRequest):
        store.tenant("../etc")


def test_prompt_threshold_beside_the_webhook_secret(stores: _Stores) -> None:
    store = stores.make()
    store.set_webhook_secret("acme", "sealed:abc", now=10.0)
    store.set_prompt_threshold("acme", 0.4, now=11.0)
    # A new instance on the same storage (memory has none beyond the instance).
    again = (store if stores.name == "memory" else stores.make()).tenant("acme")
    assert again is not None and again.prompt_threshold == 0.4
    assert again.webhook_secret == "sealed:abc" and again.updated_at == 11.0
    store.set_webhook_secret("acme", None, now=12.0)
    kept = store.tenant("acme")
    assert kept is not None and kept.prompt_threshold == 0.4 and kept.webhook_secret is None
    store.set_prompt_threshold("acme", None)
    cleared = store.tenant("acme")
    assert cleared is not None and cleared.prompt_threshold is None
