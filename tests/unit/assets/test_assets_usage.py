"""The usage graph: who references an asset, through which field."""

from __future__ import annotations

import pytest
from asset_helpers import CONN, SECRETS

from postline.errors import ConfigError


def test_usage_of_a_secret_with_field_paths(load):
    p = load({"c.yaml": CONN + "outgoing:\n  host: h\n  user: ${sec:MailSecrets.user}\n"
                               "  credential: {type: secret, secret: MailSecrets.password}\n",
              "s.yaml": SECRETS + "  user: env:U\n"}, environ={"U": "u", "MAIL_PASSWORD": "p"})
    refs = p.usage("MailSecrets")
    assert [(r.source_label, r.field, r.target_text, r.via_macro) for r in refs] == [
        ("EmailConnection/Mailbox", "incoming.credential.secret", "MailSecrets.password", False),
        ("EmailConnection/Mailbox", "outgoing.credential.secret", "MailSecrets.password", False),
        ("EmailConnection/Mailbox", "outgoing.user", "MailSecrets.user", True)]
    assert refs[0].line == 9


def test_usage_of_environment_through_macros_and_unused_assets(load):
    p = load({"c.yaml": CONN.replace("imap.example.com", "${lay:HOST}"), "s.yaml": SECRETS,
              "e.yaml": "kind: Environment\nname: E\nvariables: {HOST: h}\n"})
    assert [(r.source, r.field) for r in p.usage("E")] == [("Mailbox", "incoming.host")]
    assert p.usage("Mailbox") == []


def test_usage_of_unknown_or_ambiguous_names(load):
    p = load({"c.yaml": CONN, "s.yaml": SECRETS,
              "e.yaml": "kind: Environment\nname: MailSecrets\n"})
    with pytest.raises(ConfigError, match=r"'MailSecrets' names several assets \(Environment/"
                                          r"MailSecrets, Secret/MailSecrets\) \(pass --kind\)"):
        p.usage("MailSecrets")
    assert len(p.usage("MailSecrets", "Secret")) == 1
    with pytest.raises(ConfigError, match=r"no asset named 'Mailbx' .*did you mean 'Mailbox'"):
        p.usage("Mailbx")


def test_references_in_lists_and_dicts_of_later_kinds_are_found():
    from typing import Annotated

    from pydantic import BaseModel

    from postline.assets.kinds.base import Ref
    from postline.assets.typewalk import find_refs

    class Holder(BaseModel):
        one: Annotated[str, Ref("EmailSource")]
        many: list[Annotated[str, Ref("EmailService")]] = []
        mapped: dict[str, Annotated[str, Ref("EmailService")]] = {}
        maybe: Annotated[str, Ref("Secret")] | None = None

    h = Holder(one="src", many=["a"], mapped={"Notify": "b"}, maybe="s")
    assert [(r.path, r.kind, r.name) for r in find_refs(h)] == [
        (("one",), "EmailSource", "src"), (("many", 0), "EmailService", "a"),
        (("mapped", "Notify"), "EmailService", "b"), (("maybe",), "Secret", "s")]
