"""What every part of inferstream shares, and nothing else.

- ``common.events``: the event contract (pydantic model, wire encoding, topic names).
- ``common.settings``: the settings base every service's settings class extends.
- ``common.artifact``: the versioned model artifact format (written by training,
  read by the API and the drift flow).
- ``common.lake``: where and how the Parquet lake lays out its files.
- ``common.broker`` / ``common.topics``: the embedded local stack (the Tansu broker
  launcher and explicit topic creation).

This package sits below everything: it imports none of ``api``, ``consumers``,
``flows``, ``warehouse`` or ``inferstream``.
"""
