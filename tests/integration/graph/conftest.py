"""Fixtures of the Microsoft Graph tests: the Graph test double (session), a stub project,
microsoft365 connections for client credentials and device flow, readers on minted tokens."""

from __future__ import annotations

import pytest
from graph_helpers import StubProject, m365_data, make_mail  # noqa: F401

from postline.auth import oauth
from postline.testing.graph_double import GraphDouble

pytestmark = pytest.mark.stack


@pytest.fixture(scope="session")
def graph(mail_stack):
    """The Graph test double for the whole session (also accepts minted HS256 tokens)."""
    with GraphDouble(stack=mail_stack, accept_test_tokens=True) as double:
        yield double


@pytest.fixture(autouse=True)
def _clean(graph):
    """Each test starts without faults, request log or cached token providers."""
    graph.clear()
    oauth.forget_providers()
    yield
    graph.clear()
    oauth.forget_providers()


@pytest.fixture
def project(tmp_path, mail_stack) -> StubProject:
    return StubProject(tmp_path, {"GraphSecrets.client_secret": mail_stack.cc_client_secret})


@pytest.fixture
def user_session(mail_stack, graph, mailbox_user):
    """A factory of GraphSessions acting as ``mailbox_user`` with a minted token."""
    from postline.auth.credentials import StaticToken
    from postline.protocols.graph_http import GraphSession, RetryPolicy

    def make(**kw):
        kw.setdefault("policy", RetryPolicy(max_retries=3, default_wait=0.05))
        return GraphSession(graph_url=graph.url, mailbox=mailbox_user.email,
                            provider=StaticToken(mail_stack.mint_token(mailbox_user.email)),
                            ca_file=str(mail_stack.ca_file), connect_timeout=5,
                            read_timeout=30, **kw)
    return make


@pytest.fixture
def reader(user_session):
    from postline.protocols.graph import GraphReader

    with GraphReader(session=user_session(), poll_interval=0.1) as r:
        yield r
