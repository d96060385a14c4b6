#!/usr/bin/env bash
# Send the sample messages through the Email Service Notify of the project given as $1
# (default: this example). ${USER} in a sample is replaced by $DEMO_USER (the mailbox read by
# the Email Source), so the mails land in the INBOX that the workflow ingests.
set -euo pipefail
project=${1:-$(dirname "$0")/..}
to=${DEMO_USER:-alice@example.test}
for f in "$(dirname "$0")"/*.json; do
  echo "-- $(basename "$f")"
  sed "s/\${USER}/$to/g" "$f" | postline send "$project" Notify --message -
done
