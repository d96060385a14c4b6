"""Crash safety: SIGKILL ``postline run`` at random points while it ingests a few hundred
mails, restart until it finishes, and check every mail reached each sink exactly once and
sits in the done folder."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from srchelpers import deliver_many, make_mail

from postline.testing.waits import poll

pytestmark = [pytest.mark.stack, pytest.mark.slow]

N = 300


def test_sigkill_at_random_points_loses_nothing_and_duplicates_nothing(
        source_project, mailbox, mail_stack, mailbox_user):
    mails = [make_mail(i, f"crash test {i:03d}",
                       attachments=[("data.bin", "application/octet-stream", os.urandom(2000))]
                       if i % 10 == 0 else ())
             for i in range(N)]
    deliver_many(mail_stack, mailbox_user.email, mails)
    p = source_project.write(
        source={"folders": {"input": "INBOX", "done": "Done"}, "batch_size": 20,
                "attachments": {"load": True}},
        workflow={"sinks": [{"type": "jsonl", "path": "out/mails.jsonl"},
                            {"type": "directory", "path": "out/dir"}]})
    env = {**os.environ, **source_project.environ}
    cmd = [sys.executable, "-m", "postline", "run", str(p.root), "--once"]
    rng = random.Random(1234)
    out = p.root / "out" / "mails.jsonl"

    def lines() -> int:
        return out.read_bytes().count(b"\n") if out.exists() else 0

    kills = 0
    for attempt in range(40):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if attempt < 12:
            # kill after a random number of new records (0: during start-up / listing)
            target = lines() + rng.choice([0, 1, 5, 17, 30, 45, 60])
            deadline = time.monotonic() + (rng.uniform(0.05, 0.4) if target == lines()
                                           else 60)
            while proc.poll() is None and time.monotonic() < deadline and lines() < target:
                time.sleep(0.005)
            if target > lines() - 1 and rng.random() < 0.5:
                time.sleep(rng.uniform(0, 0.05))   # sometimes a little later: moves, ledger
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.returncode == 0 and mailbox.count("INBOX") == 0:
            break
    else:
        pytest.fail("postline run never completed")
    assert kills >= 3, "the run was too fast to be killed; raise N"
    assert "0 failed" in err
    subjects = Counter(json.loads(line)["subject"]
                       for line in (p.root / "out/mails.jsonl").read_text().splitlines())
    assert len(subjects) == N and set(subjects.values()) == {1}, subjects.most_common(3)
    assert len(list((p.root / "out/dir").glob("*.json"))) == N
    assert len(list((p.root / "out/dir").glob("*.eml"))) == N
    assert mailbox.count("Done") == N and mailbox.count("INBOX") == 0


def test_ctrl_c_to_the_process_group_finishes_the_mails_in_flight(
        source_project, mailbox, mail_stack, mailbox_user):
    # Ctrl-C reaches every process of the terminal's group, the commit helper too: it
    # must outlive the signal so that the runner can commit what it has in flight.
    deliver_many(mail_stack, mailbox_user.email, [make_mail(i, f"stop test {i:03d}")
                                                  for i in range(N)])
    p = source_project.write(source={"folders": {"input": "INBOX", "done": "Done"},
                                     "batch_size": 10})
    env = {**os.environ, **source_project.environ}
    out = p.root / "out" / "mails.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "postline", "run", str(p.root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    poll(lambda: out.exists() and out.read_bytes().count(b"\n") >= 20, timeout=60,
         interval=0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-1000:]
    assert "stopping after the mails in flight" in err and "error" not in err.lower()
    done = mailbox.count("Done")
    assert done >= 20 and done == out.read_bytes().count(b"\n")
    # and the rest comes with the next run, each mail once
    res = subprocess.run([sys.executable, "-m", "postline", "run", str(p.root), "--once"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1000:]
    subjects = Counter(json.loads(line)["subject"] for line in out.read_text().splitlines())
    assert len(subjects) == N and set(subjects.values()) == {1}
    assert mailbox.count("Done") == N


def test_a_second_run_of_the_same_source_is_refused_while_the_first_runs(
        source_project, mailbox, mail_stack, mailbox_user):
    deliver_many(mail_stack, mailbox_user.email, [make_mail(i, f"lock test {i}")
                                                  for i in range(5)])
    p = source_project.write(source={"folders": {"input": "INBOX", "done": "Done"}})
    env = {**os.environ, **source_project.environ}
    out = p.root / "out" / "mails.jsonl"
    first = subprocess.Popen([sys.executable, "-m", "postline", "run", str(p.root)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: out.exists() and out.read_bytes().count(b"\n") >= 5, timeout=60)
        second = subprocess.run([sys.executable, "-m", "postline", "run", str(p.root),
                                 "--once"], env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "source Src (workflow Flow) is already being read by another postline run: " \
               f"pid {first.pid} on host " in lines[0]
        assert first.poll() is None, "the first run must not be disturbed"
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err[-1000:]
    # once the first has stopped, the source is free again; nothing came twice
    again = subprocess.run([sys.executable, "-m", "postline", "run", str(p.root), "--once"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr[-1000:]
    assert out.read_bytes().count(b"\n") == 5 and mailbox.count("Done") == 5
