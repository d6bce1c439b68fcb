"""Metering: usage ingestion, meters, rollups, entitlements."""
