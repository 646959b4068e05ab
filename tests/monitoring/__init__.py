"""Tests of the monitoring/ files: alert and recording rules, Alertmanager, Grafana boards."""
