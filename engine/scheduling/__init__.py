"""Running pipelines on time and on events: cron schedules, the scheduler process (leadership,
triggers, catch-up, overlap, recovery), alerts, Prometheus metrics, status and the HTTP API.
"""
