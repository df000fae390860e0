"""Monitoring: drift, prediction distribution, performance decay, anomalies, alerts and schedules."""
