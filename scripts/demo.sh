#!/usr/bin/env bash
# The main job, end to end, on a local mail stack that this script starts itself:
#   1. install what is missing (Debian packages, .venv, npm packages of the OAuth server)
#   2. start the local stack (Dovecot, Postfix, oidc-provider) in .devstack/ on 127.0.0.1
#   3. copy examples/local to .devstack/demo-project, create a key pair, seal the password
#   4. validate and show the project, test the connection
#   5. send sample mails through the Email Service, ingest them with the Email Source
#      (workflow -> JSONL + directory sinks) and show the records
# The stack keeps running afterwards so you can play; `make stack-stop` stops it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing what is missing"
scripts/bootstrap.sh
export PATH="$here/.venv/bin:$PATH"

step "starting the local mail stack"
postline dev-stack start --dir .devstack
eval "$(postline dev-stack env --dir .devstack)"

demo=.devstack/demo-project
step "preparing the example project in $demo"
rm -rf "$demo"; mkdir -p "$demo"
cp -r examples/local/. "$demo"/
export POSTLINE_KEY_FILE="$here/.devstack/demo.key"   # `postline dev-stack env` exports it too
export DEMO_USER="demo$(date +%s)@example.test"     # a fresh mailbox of the stack for this run
# bake the demo user into the copy, so later commands on it work without DEMO_USER set
sed -i "s/\${env:DEMO_USER:-alice@example.test}/$DEMO_USER/g" "$demo"/*.yaml
rm -f "$POSTLINE_KEY_FILE"
postline keys create "$demo" --force
# the stack's users have the password '<local part>-pass'; it is sealed, never stored in clear
printf '%s' "${DEMO_USER%@*}-pass" | postline secret set "$demo" DemoSecrets password
postline secret list "$demo"

step "validating the project"
postline validate "$demo"
postline assets "$demo"
postline show "$demo" LocalMail

step "testing the connection (both directions)"
postline test-connection "$demo" LocalMail

step "sending the sample mails through the Email Service into $DEMO_USER's INBOX"
bash "$demo/samples/send.sh" "$demo"

step "ingesting the INBOX with the Email Source (workflow InboxToFiles)"
# Postfix delivers asynchronously; wait until the four mails are in the mailbox
.venv/bin/python - <<PY
import imaplib, os, ssl, time
ctx = ssl.create_default_context(cafile=os.environ["POSTLINE_STACK_CA_FILE"])
deadline = time.monotonic() + 30
while True:
    with imaplib.IMAP4_SSL(os.environ["POSTLINE_STACK_HOST"], int(os.environ["POSTLINE_STACK_IMAPS_PORT"]), ssl_context=ctx) as c:
        c.login(os.environ["DEMO_USER"], os.environ["DEMO_USER"].split("@")[0] + "-pass")
        n = int(c.select("INBOX")[1][0])
    if n >= 4 or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(f"{n} mails waiting in INBOX")
PY
postline run "$demo" --once -v

step "the records (out/records.jsonl, abridged)"
.venv/bin/python - "$demo/out/records.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    print(json.dumps({k: r.get(k) for k in ("key", "stream_name", "subject", "from", "to", "date", "tags")}
                     | {"text": (r.get("text") or "")[:60],
                        "attachments": [{k: a.get(k) for k in ("filename", "content_type", "size", "path")}
                                        for a in r.get("attachments", [])]},
                     ensure_ascii=False, indent=2))
PY
echo
echo "files written by the directory sink:"; find "$demo/out/mails" -type f | sort | head -20
step "the ledger"
postline ledger list "$demo" Inbox

step "done"
echo "Project: $demo   Records: $demo/out/records.jsonl"
echo "Try more on it:  eval \"\$(.venv/bin/postline dev-stack env)\"   # the stack's ports, CA and the demo's POSTLINE_KEY_FILE"
echo "                 .venv/bin/postline test-connection $demo LocalMail"
echo "                 .venv/bin/postline run $demo --status 9464    # watch (IDLE); curl localhost:9464/metrics"
echo "                 .venv/bin/postline ledger list $demo Inbox"
echo "The stack is still running (postline dev-stack status --dir .devstack); stop it with: make stack-stop"
