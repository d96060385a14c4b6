"""Demo processor: tags each record, and notifies ops about urgent mail.

``on_message(message, ctx)`` gets the record as a dict. Change it in place or return a new
dict; raise to fail the mail (it goes to the error folder, the reason to the ledger).
"""


def on_message(message, ctx):
    subject = message.get("subject") or ""
    tags = []
    if message.get("attachments"):
        tags.append("has-attachments")
    if any(ord(c) > 127 for c in subject):
        tags.append("non-ascii-subject")
    if "urgent" in subject.lower():
        tags.append("urgent")
        # queued durably and sent in the background; ops is another mailbox of the stack
        ctx.services.Notify.SendAndForget({
            "To": [{"Address": "ops@example.test", "PersonalName": "Ops"}],
            "Subject": f"Urgent mail received: {subject}",
            "Body": f"From {message['from'][0]['address'] if message.get('from') else '?'}",
        })
    message["tags"] = tags
    ctx.log.info("tagged %s: %s", ctx.key, ", ".join(tags) or "-")
    return message
