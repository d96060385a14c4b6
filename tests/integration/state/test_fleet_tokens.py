"""Device-flow token caches on PostgreSQL: sealed as in a file, shared by every instance,
refreshed by one instance at a time."""

from __future__ import annotations

import threading
import time

import psycopg

import postline
from postline.auth import token_cache
from postline.cli import main
from postline.state.pg_tokens import shared_tokens


def test_a_token_cache_is_sealed_in_the_state_store_and_shared(store_project, tmp_path,
                                                               monkeypatch, pg_url, schema):
    monkeypatch.setenv("POSTLINE_KEY_FILE", str(tmp_path / "key.priv"))
    root = store_project()
    assert main(["keys", "create", str(root)]) == 0
    env = {"POSTLINE_KEY_FILE": str(tmp_path / "key.priv")}
    one = postline.open_project(root, environ={**env, "POSTLINE_STATE_DIR": str(tmp_path / "a")})
    two = postline.open_project(root, environ={**env, "POSTLINE_STATE_DIR": str(tmp_path / "b")})
    path = token_cache.cache_path(one.state_dir, "Box", "incoming")
    token_cache.save(one, path, '{"RefreshToken": {"secret-refresh": 1}}')
    assert not path.exists()                               # not in a file
    other = token_cache.cache_path(two.state_dir, "Box", "incoming")
    assert token_cache.load(two, other) == '{"RefreshToken": {"secret-refresh": 1}}'
    with psycopg.connect(pg_url) as conn:
        [(sealed,)] = conn.execute(f"SELECT sealed FROM {schema}.tokens").fetchall()
    assert "secret-refresh" not in sealed                 # sealed with the project's key
    assert token_cache.load(two, token_cache.cache_path(two.state_dir, "Box", "outgoing")) \
        is None

    # one refresher at a time across instances
    inside, most = [0], [0]
    lock = threading.Lock()

    def refresh(project) -> None:
        with shared_tokens(project).refresh_lock(path.name):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1
    threads = [threading.Thread(target=refresh, args=(p,)) for p in (one, two, one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
