"""Notifications: thresholds over the engine's outputs, events and signed webhooks.

``rules`` reads the rules file (pure), ``evaluate`` decides crossings from an observation and
the rule's armed/fired state (pure), ``signing`` signs and verifies webhook bodies (pure),
``state`` keeps the armed/fired states in Redis, ``delivery`` posts events to webhooks with
retries and dead letters (kept in ``state`` until done), ``outbox`` reads what the notifier
observes in an outbox entry, ``notifier`` is the Kafka loop that ties them together
(``chargeflow notify``; docs/notifications.md).
"""
