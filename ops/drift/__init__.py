"""Drift monitoring of drafted impressions: aggregation, detection, alerts, report and dashboard.

``DriftStage(store).score(record)`` before the capture stage stores an ``EditRecord``, then
``DriftStage.observe(record) -> list[Alert]`` after; ``ops.drift.web.dashboard_router`` serves the
built-in dashboard and ``ops.drift.report`` the ``drift report`` command. See README.md.
"""
