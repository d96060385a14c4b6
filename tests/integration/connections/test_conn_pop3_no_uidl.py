"""POP3 servers without UIDL (optional in RFC 1939): ids come from a hash of the headers,
stay the same across sessions, and fetch/delete work with them."""

from __future__ import annotations

from connhelpers import incoming

from postline.auth.credentials import PasswordLogin
from postline.protocols.pop3 import Pop3Reader
from postline.testing.faults import FaultServer, Pop3Maildrop, pop3_without_uidl

LOGIN = PasswordLogin(user="bob@example.test", password="bob-secret-pw")


def mail(n: int) -> bytes:
    return (f"From: a@example.test\r\nTo: bob@example.test\r\nSubject: no uidl {n}\r\n"
            f"Message-ID: <nouidl-{n}@example.test>\r\n\r\nbody {n}\r\n.leading dot\r\n"
            ).encode()


def reader(port: int) -> Pop3Reader:
    return Pop3Reader(endpoint=incoming(protocol="pop3", port=port, security="none"),
                      login=LOGIN)


def test_ids_without_uidl_are_stable_and_fetch_and_delete_work(tmp_path):
    drop = Pop3Maildrop([mail(1), mail(2)])
    with FaultServer(pop3_without_uidl(drop)) as srv:
        with reader(srv.port) as r:
            refs, _ = r.list_messages("INBOX")
            assert [ref.id[:7] for ref in refs] == ["sha256:", "sha256:"]
            assert len({ref.id for ref in refs}) == 2
            first_ids = [ref.id for ref in refs]
            got = list(r.fetch(refs, spool_dir=tmp_path))
            assert [m.data for m in got] == [mail(1), mail(2)]   # dot-unstuffed, exact bytes

        drop.add(mail(3))
        with reader(srv.port) as r:
            refs, _ = r.list_messages("INBOX")
            # the same mails keep their ids in a new session; the new one gets its own
            assert [ref.id for ref in refs][:2] == first_ids
            assert len({ref.id for ref in refs}) == 3
            r.delete([refs[0]])

        with reader(srv.port) as r:
            refs, _ = r.list_messages("INBOX")
            assert [ref.id for ref in refs] == [first_ids[1], refs[1].id]
            assert [m.data for m in r.fetch(refs, spool_dir=tmp_path)] == [mail(2), mail(3)]
