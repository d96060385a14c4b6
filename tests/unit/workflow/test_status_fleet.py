"""``run --status`` in a fleet: a source another instance reads is neither stuck nor
unready here, and /metrics and /status say who holds which lease."""

from __future__ import annotations

from postline.workflow.status import RunStatus


def test_sources_of_other_instances_count_as_elsewhere_and_leases_are_shown():
    now = [1000.0]
    st = RunStatus({"A": "SrcA", "B": "SrcB"}, clock=lambda: now[0], stall_after=60)
    st.lease("A", owned=True, token=7)
    st.connected("A")
    st.lease("B", owned=False)
    assert st.readiness() == (True, [])
    now[0] += 600
    st.lease("B", owned=False)          # every heartbeat
    st.alive("A")
    assert st.health() == (True, [])
    flows = st.snapshot()["workflows"]
    assert flows["A"]["lease"] == {"owned": True, "token": 7}
    assert (flows["B"]["state"], flows["B"]["lease"]) == ("elsewhere",
                                                          {"owned": False, "token": None})
    st.fleet(instance="a", live=3, differing=["c"])
    assert st.snapshot()["fleet"] == {"instance": "a", "live_instances": 3,
                                      "differing_instances": ["c"]}
    text = st.metrics_text().decode()
    assert "postline_fleet_instances_live 3.0" in text
    assert "postline_fleet_instances_differing 1.0" in text
    assert 'postline_source_lease_owned{workflow="A"} 1.0' in text
    assert 'postline_source_lease_owned{workflow="B"} 0.0' in text
    assert 'postline_source_lease_token{workflow="A"} 7.0' in text


def test_without_a_fleet_the_status_has_no_lease():
    st = RunStatus({"A": "SrcA"})
    assert "lease" not in st.snapshot()["workflows"]["A"]
    assert "fleet" not in st.snapshot()
