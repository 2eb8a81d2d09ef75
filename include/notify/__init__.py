"""Notifications that reach people: pipeline events, email and signed webhooks, every attempt recorded.

Plain Python, no Airflow (plugins/savedmodel_notifiers.py holds the Airflow notifiers that call it):

- events.py      the four events (run_failed, gate_blocked, approval_waiting, label_moved) as JSON
- message.py     an event in words: an email's subject, plain text and HTML
- signing.py     HMAC-SHA256 signatures of a webhook's body, with a timestamp against replay
- delivery.py    bounded retries with a hard deadline per try; a delivery never raises
- webhook.py     one signed POST of an event
- record.py      `<model dir>/.notifications/deliveries.jsonl`: one JSON line per attempt
"""
