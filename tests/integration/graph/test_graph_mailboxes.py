"""Folders, mailboxes, delegation and the per-app limit against the Graph test double
(issue 19: ErrorFolderExists, hidden folders, errors by code, 404 on move, 4 per app)."""

from __future__ import annotations

import logging
import threading

import pytest
from graph_helpers import m365_data, make_mail

from postline.auth.credentials import StaticToken
from postline.errors import AuthError, ConfigError
from postline.protocols import open_reader
from postline.protocols.graph import GraphReader
from postline.protocols.graph_http import GraphSession, RetryPolicy
from postline.testing.info import MailUser
from postline.testing.waits import eventually

pytestmark = pytest.mark.stack


def session_for(mail_stack, graph, email: str, *, token_of: str | None = None,
                app: str | None = None, claims: dict | None = None) -> GraphSession:
    token = mail_stack.mint_token(token_of or email, claims=claims)
    return GraphSession(graph_url=graph.url, mailbox=email, provider=StaticToken(token),
                        ca_file=str(mail_stack.ca_file), connect_timeout=5, read_timeout=30,
                        policy=RetryPolicy(max_retries=3, default_wait=0.05), app=app)


@pytest.mark.parametrize("status", [400, 409])
def test_a_hidden_folder_that_exists_is_found_again(reader, mail_stack, mailbox_user, graph,
                                                    status):
    mail_stack.deliver(mailbox_user.email, make_mail("to hide"))
    _imap_create(mail_stack, mailbox_user, "Hidden")
    graph.hide("Hidden")
    graph.store.exists_status = status
    try:
        refs, _ = reader.list_messages("inbox")
        reader.move(refs, "Hidden")
    finally:
        graph.store.exists_status = 400
    assert mail_stack.subjects(mailbox_user.email, "Hidden") == ["to hide"]
    assert [s.status for s in graph.requests if s.method == "POST"
            and s.path.endswith("/mailFolders")] == [status]
    assert any("includeHiddenFolders=true" in s.query for s in graph.requests)


def _imap_create(mail_stack, user, name: str) -> None:
    """Create folder ``name`` over IMAP, or delete it when it exists."""
    from imapclient import IMAPClient

    c = IMAPClient(mail_stack.host, port=mail_stack.ports["imap"], ssl=False, timeout=10)
    c.login(user.email, user.password)
    try:
        if c.folder_exists(name):
            c.delete_folder(name)
        else:
            c.create_folder(name)
    finally:
        c.logout()


def test_a_404_on_move_checks_the_destination_before_calling_the_mail_vanished(
        reader, mail_stack, mailbox_user, graph):
    for s in ("one", "two"):
        mail_stack.deliver(mailbox_user.email, make_mail(s))
    refs, _ = reader.list_messages("inbox")
    reader.move(refs[:1], "Target")
    _imap_create(mail_stack, mailbox_user, "Target")        # deleted behind our back
    reader.move(refs[1:], "Target")                          # cached id: 404, then recreated
    assert mail_stack.subjects(mailbox_user.email, "Target") == ["two"]
    assert mail_stack.subjects(mailbox_user.email, "INBOX") == []


@pytest.mark.parametrize("code", ["MailboxNotEnabledForRESTAPI", "ErrorInvalidUser",
                                  "ResourceNotFound"])
def test_an_unusable_mailbox_is_one_configuration_error(reader, mailbox_user, graph, code):
    graph.unusable[mailbox_user.email.lower()] = code
    with pytest.raises(ConfigError, match=f"cannot use mailbox {mailbox_user.email}: it does "
                                          f"not exist, is not licensed or is on-premises.*"
                                          f"{code}"):
        reader.open_folder("inbox")


def test_a_delegate_needs_a_grant_and_the_shared_scopes(mail_stack, graph, mailbox_user):
    owner = MailUser.fresh()
    mail_stack.deliver(owner.email, make_mail("shared mail"))
    def plain() -> GraphReader:
        return GraphReader(session=session_for(mail_stack, graph, owner.email,
                                               token_of=mailbox_user.email))

    with pytest.raises(AuthError, match="denied reading the Inbox.*ErrorAccessDenied"):
        with plain():
            pass
    graph.grant(owner.email, to=mailbox_user.email)
    with pytest.raises(AuthError, match="lacks the Mail.Read.Shared permission"):
        with plain():
            pass
    shared = GraphReader(session=session_for(
        mail_stack, graph, owner.email, token_of=mailbox_user.email,
        claims={"scope": "Mail.ReadWrite.Shared Mail.Send.Shared"}))
    with shared:
        assert len(shared.list_messages("inbox")[0]) == 1


def test_device_flow_naming_a_mailbox_without_shared_scopes_warns(project, mail_stack, graph,
                                                                 caplog):
    conn = project.add(m365_data(mail_stack, graph.url, credential="oauth_device_flow",
                                 mailbox="shared@example.test"))
    with caplog.at_level(logging.WARNING, logger="postline.graph"):
        open_reader(project, conn)
    assert "needs the delegated scope(s) Mail.ReadWrite.Shared and Mail.Send.Shared" \
        in caplog.text


def test_four_requests_per_app_across_mailboxes(mail_stack, graph):
    users = [MailUser.fresh(), MailUser.fresh()]
    for u in users:
        for i in range(8):
            mail_stack.deliver(u.email, make_mail(f"m{i}"))
    readers = [GraphReader(session=session_for(mail_stack, graph, u.email, app="one-app",
                                               claims={"appid": "one-app"})) for u in users]
    lists = [r.list_messages("inbox")[0] for r in readers]
    graph.clear()
    threads = [threading.Thread(target=r.move, args=(refs, "Done"))
               for r, refs in zip(readers, lists, strict=False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [mail_stack.subjects(u.email, "Done").__len__() for u in users] == [8, 8]
    assert graph.max_in_flight_per_app["one-app"] <= 4
    assert 429 not in {s.status for s in graph.requests}


def test_the_double_answers_a_fifth_concurrent_request_of_an_app_with_429(mail_stack, graph):
    import httpx

    token = mail_stack.mint_token(MailUser.fresh().email, claims={"appid": "busy-app"})
    client = httpx.Client(verify=mail_stack.ssl_context(), trust_env=False, timeout=30,
                          headers={"Authorization": f"Bearer {token}"})
    statuses: list[int] = []

    def ask() -> None:
        statuses.append(client.get(f"{graph.url}/me/mailFolders/inbox").status_code)

    graph.pause()
    try:
        held = [threading.Thread(target=ask) for _ in range(4)]
        for t in held:
            t.start()
        eventually(lambda: graph.in_flight("busy-app") >= 4, 10, "four requests in flight",
                   interval=0.01)
        fifth = client.get(f"{graph.url}/me/mailFolders/inbox")
    finally:
        graph.resume()
    for t in held:
        t.join()
    assert fifth.status_code == 429 and float(fifth.headers["Retry-After"]) > 0
    assert fifth.json()["error"]["code"] == "ApplicationThrottled"
    assert statuses == [200] * 4
    client.close()
