"""A process that holds an Email Service for the SIGKILL durability test.

``python outbox_child.py DIR enqueue N BLOCK_AFTER``: queue N mails with SendAndForget, let the
"server" take BLOCK_AFTER of them, then hang inside the next send until killed.
``python outbox_child.py DIR drain``: open the service again, deliver what is queued, print
the outbox counts as JSON.

The "server" is a file: each accepted mail appends its Message-ID (fsynced), so deliveries
survive the kill and can be counted by the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from service_fakes import MSG, FakeSender, make_project  # noqa: E402

from postline.service import open_service  # noqa: E402


class FileServer(FakeSender):
    def __init__(self, records: Path, block_after: int | None) -> None:
        super().__init__()
        self.records = records
        self.block_after = block_after

    async def send(self, envelope, message, *, message_id=""):
        if self.block_after is not None and len(self.sent) >= self.block_after:
            print("blocked", flush=True)
            await asyncio.Event().wait()        # "in DATA" until SIGKILL
        result = await super().send(envelope, message, message_id=message_id)
        with open(self.records, "a") as f:
            f.write(message_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        return result


def main() -> None:
    root, mode = Path(sys.argv[1]), sys.argv[2]
    records = root / "server-records.txt"
    block_after = int(sys.argv[4]) if mode == "enqueue" else None
    sender = FileServer(records, block_after)
    project = make_project(root, max_connections=1)
    svc = open_service(project, "Notify", sender_factory=lambda: sender, poll_interval=0.05)
    if mode == "enqueue":
        for i in range(int(sys.argv[3])):
            svc.SendAndForget({**MSG, "Subject": f"mail {i}"})
        print("queued", flush=True)
        while True:
            asyncio.run(asyncio.sleep(3600))
    assert svc.flush(20), "queue not drained"
    print(json.dumps(svc.outbox.counts("Notify")), flush=True)
    svc.close()


if __name__ == "__main__":
    main()
