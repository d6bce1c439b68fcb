"""Customers and their subscriptions."""
