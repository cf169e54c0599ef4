"""Envelope encryption: SecretBox over the in-memory KeyStore (same contract as the SQL one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from tenantry.core.crypto import MasterKey, MemoryKeyStore, SecretBox, WrappedKey, write_private
from tenantry.core.errors import InvalidInput, Unavailable


def box_in(tmp_path: Path, store: MemoryKeyStore) -> SecretBox:
    return SecretBox.from_data_dir(tmp_path, store=store)


def rotate_in_memory(tmp_path: Path, store: MemoryKeyStore, old: SecretBox) -> SecretStr:
    """What `rotate_master` does, on the dict store: re-wrap, then replace the key file."""
    new_key = MasterKey.generate()
    new = MasterKey(new_key)
    for k in list(store.keys.values()):
        store.keys[k.id] = WrappedKey(id=k.id, org=k.org, master_key_id=new.key_id,
                                      wrapped=new.wrap(old.master.unwrap(k.wrapped)))
    write_private(tmp_path / "master.key", new_key.get_secret_value().encode())
    return new_key


def test_round_trip_uses_one_data_key_per_org(tmp_path: Path) -> None:
    store = MemoryKeyStore()
    box = box_in(tmp_path, store)
    a1, a2 = box.encrypt("s3cret", org="i1"), box.encrypt(SecretStr("other"), org="i1")
    b = box.encrypt("s3cret", org="i2")
    p = box.encrypt("s3cret")
    assert all(t.startswith("v2:") and "s3cret" not in t for t in (a1, b, p))
    assert a1.split(":")[1] == a2.split(":")[1] != b.split(":")[1] != p.split(":")[1]
    assert {k.org for k in store.keys.values()} == {"i1", "i2", "provider"}
    assert box.decrypt(a1).get_secret_value() == "s3cret"
    assert box.decrypt(a2).get_secret_value() == "other"
    # a fresh process (empty cache) reads the same store
    assert box_in(tmp_path, store).decrypt(b).get_secret_value() == "s3cret"


def test_data_keys_are_stored_wrapped_and_never_shown(tmp_path: Path) -> None:
    store = MemoryKeyStore()
    box = box_in(tmp_path, store)
    box.encrypt("x", org="i1")
    (key,) = store.keys.values()
    raw = box.master.unwrap(key.wrapped)
    assert raw.decode() not in key.wrapped and raw.decode() not in repr(key)
    assert repr(box) == "SecretBox(**********)"
    assert (tmp_path / "master.key").read_text().strip() not in repr(box.master)
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600


def test_v1_tokens_still_decrypt(tmp_path: Path) -> None:
    legacy = SecretBox.from_data_dir(tmp_path)  # no store: the format before data keys
    token = legacy.encrypt("old")
    assert not token.startswith("v2:")
    assert box_in(tmp_path, MemoryKeyStore()).decrypt(token).get_secret_value() == "old"


def test_wrong_master_key_is_unavailable(tmp_path: Path) -> None:
    store = MemoryKeyStore()
    token = box_in(tmp_path, store).encrypt("x", org="i1")
    other = SecretBox(MasterKey.generate(), store=store)
    with pytest.raises(Unavailable):
        other.decrypt(token)
    with pytest.raises(Unavailable):
        other.decrypt("garbage")


def test_running_process_survives_rotation(tmp_path: Path) -> None:
    store = MemoryKeyStore()
    running = box_in(tmp_path, store)
    cached = running.encrypt("cached", org="i1")
    uncached = box_in(tmp_path, store).encrypt("uncached", org="i2")
    derived = running.derive("audit")
    rotate_in_memory(tmp_path, store, running)
    assert running.decrypt(cached).get_secret_value() == "cached"
    assert running.decrypt(uncached).get_secret_value() == "uncached"  # re-reads master.key
    fresh = box_in(tmp_path, store)
    assert fresh.decrypt(cached).get_secret_value() == "cached"
    assert fresh.derive("audit") == derived  # bound to the provider's data key, not the master


def test_stale_process_does_not_wrap_new_keys_with_the_old_master(tmp_path: Path) -> None:
    store = MemoryKeyStore()
    stale = box_in(tmp_path, store)
    stale.encrypt("x", org="i1")
    rotate_in_memory(tmp_path, store, stale)
    token = stale.encrypt("y", org="i3")  # reloads the key file before wrapping
    assert {k.master_key_id for k in store.keys.values()} == {MasterKey(
        SecretStr((tmp_path / "master.key").read_text().strip())).key_id}
    assert box_in(tmp_path, store).decrypt(token).get_secret_value() == "y"


def test_env_key_process_cannot_reload(tmp_path: Path) -> None:
    store = MemoryKeyStore()
    key = MasterKey.generate()
    env_box = SecretBox.from_data_dir(tmp_path, key, store=store)
    env_box.encrypt("x", org="i1")
    new = MasterKey(MasterKey.generate())
    for k in list(store.keys.values()):
        store.keys[k.id] = WrappedKey(id=k.id, org=k.org, master_key_id=new.key_id,
                                      wrapped=new.wrap(env_box.master.unwrap(k.wrapped)))
    with pytest.raises(Unavailable, match="restart"):
        env_box.encrypt("y", org="i9")


def test_interrupted_rotation_is_finished_by_the_next_reader(tmp_path: Path) -> None:
    """The store was committed, but master.key.next was never renamed over master.key."""
    store = MemoryKeyStore()
    box = box_in(tmp_path, store)
    token = box.encrypt("x", org="i1")
    new_key = MasterKey.generate()
    new = MasterKey(new_key)
    write_private(tmp_path / "master.key.next", new_key.get_secret_value().encode())
    for k in list(store.keys.values()):
        store.keys[k.id] = WrappedKey(id=k.id, org=k.org, master_key_id=new.key_id,
                                      wrapped=new.wrap(box.master.unwrap(k.wrapped)))
    assert box_in(tmp_path, store).decrypt(token).get_secret_value() == "x"
    assert not (tmp_path / "master.key.next").exists()
    assert MasterKey(SecretStr((tmp_path / "master.key").read_text())).key_id == new.key_id


def test_key_file_must_be_private(tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text(Fernet.generate_key().decode())
    (tmp_path / "master.key").chmod(0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        SecretBox.from_data_dir(tmp_path)
