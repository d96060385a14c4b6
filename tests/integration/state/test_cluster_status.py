"""``postline cluster status`` and the lease rules, on the tests' real PostgreSQL."""

from __future__ import annotations

import json

import pytest

import postline
from postline.cli import main
from postline.state.leases import Leases
from postline.state.postgres import open_pool, target_of
from postline.state.stores import open_ledger


@pytest.fixture
def leases_of(store_project, schema):
    root = store_project(extra="lease_seconds: 30\n")
    project = postline.open_project(root)
    open_ledger(project).close()          # migrates the schema
    pools = []

    def make(owner: str) -> Leases:
        pool = open_pool(target_of(project), max_size=1)
        pools.append(pool)
        return Leases(pool=pool, schema=schema, owner=owner, lease_seconds=30)
    yield root, make
    for pool in pools:
        pool.close()


def test_a_lease_has_one_owner_and_a_token_that_grows_with_every_new_owner(leases_of):
    _, make = leases_of
    a, b = make("a"), make("b")
    ta = a.acquire("Src")
    assert ta == 1 and b.acquire("Src") is None       # held: nobody else gets it
    assert a.renew("Src", ta) and not b.renew("Src", ta)
    a.release("Src", ta)
    tb = b.acquire("Src")
    assert tb == 2                                    # a new owner: a greater token
    assert not a.renew("Src", ta)                     # the old owner's token is stale
    a.release("Src", ta)                              # ... and releases nothing
    assert [(r.owner, r.token, r.held) for r in b.rows()] == [("b", 2, True)]


def test_cluster_status_lists_instances_and_owners_and_flags_a_stranger(leases_of, capsys,
                                                                        monkeypatch):
    root, make = leases_of
    a, b, c = make("host1:10"), make("host2:20"), make("host3:30")
    for lease, version in ((a, "0.1.0"), (b, "0.1.0"), (c, "0.2.0")):
        lease.join(host=lease.owner.split(":")[0], pid=int(lease.owner.split(":")[1]),
                   version=version, assets_hash="abc123")
    token = a.acquire("Src")
    a.round_done("Src", token)
    assert main(["cluster", "status", str(root), "--json"]) == 1     # a flagged instance
    got = json.loads(capsys.readouterr().out)
    assert [(i["name"], i["version"], i["live"], i["flagged"]) for i in got["instances"]] == [
        ("host1:10", "0.1.0", True, False), ("host2:20", "0.1.0", True, False),
        ("host3:30", "0.2.0", True, True)]
    [src] = got["sources"]
    assert (src["source"], src["owner"], src["token"], src["backlog"]) == \
        ("Src", "host1:10", 1, 0)
    assert src["last_round"] and src["lease_expires"]
    c.leave()
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["cluster", "status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "host1:10" in out and "host3:30" not in out and "FLAGGED" not in out


def test_cluster_status_without_a_postgresql_state_store_is_one_line(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("kind: Secret\nname: S\nvalues: {}\n")
    assert main(["cluster", "status", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no StateStore asset" in err


def test_the_console_runtime_view_shows_the_fleet(leases_of):
    from postline.web.runtime import fragment

    root, make = leases_of
    a, b = make("host1:10"), make("host2:20")
    for lease, version in ((a, "0.1.0"), (b, "0.2.0")):
        lease.join(host=lease.owner.split(":")[0], pid=int(lease.owner.split(":")[1]),
                   version=version, assets_hash="abc123")
    a.acquire("Src")
    html = fragment(postline.open_project(root), None)
    assert "<h2>Fleet</h2>" in html and "no run to show" not in html
    assert 'data-instance="host1:10"' in html and 'data-instance="host2:20"' in html
    assert html.count("differs from the others") == 1
    assert '<tr data-source="Src"><td><a href="/sources/Src">Src</a></td><td>host1:10</td>' in html
