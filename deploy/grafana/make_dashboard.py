# ruff: noqa: E501  (PromQL expressions read best whole)
"""Writes deploy/grafana/dashboards/gopwatch.json (run after changing a panel; a test checks it is current).

.venv/bin/python deploy/grafana/make_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "dashboards" / "gopwatch.json"
DS = {"type": "prometheus", "uid": "prometheus"}

# (title, unit, [(expr, legend)]) in the order they are laid out, two per row
PANELS = [
    ("Lag behind live, per stream", "s", [("max by (stream) (gopwatch_lag_seconds)", "{{stream}}")]),
    ("Segments per second, by outcome", "ops", [("sum by (outcome) (rate(gopwatch_segments_total[1m]))", "{{outcome}}")]),
    ("Risk events started, by category (per minute)", "none",
     [('sum by (category) (increase(gopwatch_events_total{lifecycle="started"}[1m]))', "{{category}}")]),
    ("Degraded streams", "none", [("sum(gopwatch_degraded_streams)", "degraded"), ("sum(gopwatch_open_streams)", "open")]),
    ("Processing latency (p50, p99)", "s",
     [("histogram_quantile(0.5, sum by (le) (rate(gopwatch_segment_processing_seconds_bucket[5m])))", "processing p50"),
      ("histogram_quantile(0.99, sum by (le) (rate(gopwatch_segment_processing_seconds_bucket[5m])))", "processing p99"),
      ("histogram_quantile(0.99, sum by (le) (rate(gopwatch_ingest_to_event_seconds_bucket[5m])))", "ingest to event p99")]),
    ("Dead letters per second, by reason", "ops", [("sum by (error) (rate(gopwatch_dead_letters_total[5m]))", "{{error}}")]),
    ("Workers and screeners ready", "none", [("sum(gopwatch_ready)", "ready"), ("count(gopwatch_ready)", "running")]),
    ("Knowledge base", "none", [("max(gopwatch_kb_examples)", "examples"),
                                ("sum(rate(gopwatch_kb_records_skipped_total[5m]))", "records skipped/s")]),
    ("Screening tier: stills per second, by outcome", "ops",
     [("sum by (outcome) (rate(gopwatch_stills_screened_total[1m]))", "{{outcome}}")]),
    ("Screening time per still (p50, p99)", "s",
     [("histogram_quantile(0.5, sum by (le) (rate(gopwatch_still_screening_seconds_bucket[5m])))", "p50"),
      ("histogram_quantile(0.99, sum by (le) (rate(gopwatch_still_screening_seconds_bucket[5m])))", "p99")]),
]  # fmt: skip


def dashboard() -> dict[str, object]:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + k), "datasource": DS, "expr": e, "legendFormat": leg}
                        for k, (e, leg) in enumerate(targets)],
        })  # fmt: skip
    return {"uid": "gopwatch", "title": "gopwatch workers", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-30m", "to": "now"}, "refresh": "10s", "tags": ["gopwatch"],
            "panels": panels}  # fmt: skip


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=1) + "\n")
