"""The automation that notifies on drift, defined here and created by
``inferstream flows automation --webhook-url URL`` against the Prefect API in
``PREFECT_API_URL``.

It saves a Prefect Webhook block (``inferstream-drift-webhook``: the URL, JSON content
type) and one automation (``inferstream: notify on drift``) that fires on every
``inferstream.drift.detected``, ``inferstream.drift.quality-drop`` and
``inferstream.drift.no-data`` event (``flows.artifacts``
emits them, one per model and version run) and calls the block with the event as JSON:

    {"event": "inferstream.drift.detected", "occurred": "...", "resource": "inferstream.model.<m>.v<v>",
     "payload": {"outcome", "verdict", "model", "version", "reason", "window", "rows",
                 "drifted_columns", "report_url"}}

Running it again replaces both (same names), so it is safe to run on every deploy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.automations import Automation, CallWebhook, EventTrigger, Posture
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client

from flows.outcome import EVENTS, Outcome

AUTOMATION_NAME = "inferstream: notify on drift"
BLOCK_NAME = "inferstream-drift-webhook"
NOTIFY_ON = (EVENTS[Outcome.DRIFT], EVENTS[Outcome.QUALITY_DROP], EVENTS[Outcome.NO_DATA])
PAYLOAD = (
    '{"event": {{ event.event | tojson }}, "occurred": "{{ event.occurred }}", '
    '"resource": {{ event.resource.id | tojson }}, "payload": {{ event.payload | tojson }}}'
)


def definition(block_document_id: Any) -> Automation:
    """The automation, unsaved (tests read it; ``ensure`` creates it)."""
    return Automation(
        name=AUTOMATION_NAME,
        description="POST the drift run's outcome to the inferstream-drift-webhook block on drift, "
        "quality drop or no data",
        trigger=EventTrigger(
            expect=set(NOTIFY_ON),
            match={"prefect.resource.id": "inferstream.model.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[CallWebhook(block_document_id=block_document_id, payload=PAYLOAD)],
    )


def ensure(webhook_url: str) -> Automation:
    """Save the webhook block and (re)create the automation; returns the automation."""
    block_id = Webhook(method="POST", url=webhook_url, headers={"Content-Type": "application/json"}).save(
        BLOCK_NAME, overwrite=True
    )
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(old.id)
    created = definition(block_id).create()  # sync here: prefect's sync_compatible call
    if not isinstance(created, Automation):
        raise TypeError(f"the automation was not created: {created!r}")
    return created
