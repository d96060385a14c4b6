"""What the duplicate check's content fingerprint costs per mail, beside parsing the mail.

    python bench/fingerprint.py [--mails 2000]

Parses the generated mails of bench/ingest.py in memory (attachments hashed, not stored),
then times :func:`postline.source.fingerprint.fingerprint` over all of them. The
fingerprint hashes the From, Date and Subject headers, the decoded text and HTML bodies and
the attachments' hashes (already computed for the record), so its cost is mostly encoding
and hashing the bodies' text. Not part of ``make bench``: no target, an orientation only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import generate

from postline.source.filters import AttachmentRules
from postline.source.fingerprint import fingerprint
from postline.source.parse import parse_mail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mails", type=int, default=2000)
    args = ap.parse_args(argv)
    mails = generate(args.mails)
    policy = AttachmentRules(load=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        parsed = [parse_mail(data=m, policy=policy, work_dir=Path(tmp)) for m in mails]
        for p in parsed:
            for a in p.attachments:
                a.sha256   # noqa: B018 - wait for the store thread, as the record does
        t_parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in parsed:
            fingerprint(p)
        t_fp = time.perf_counter() - t0
    n = len(mails)
    print(f"{n} mails, {sum(map(len, mails)) / 1e6:.0f} MB: parse {t_parse * 1e6 / n:.0f} us "
          f"per mail, fingerprint {t_fp * 1e6 / n:.1f} us per mail "
          f"({100 * t_fp / t_parse:.1f}% of the parse)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
