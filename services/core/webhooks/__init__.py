"""Webhooks per the Standard Webhooks spec: subscriptions checked at submit time, signing,
scheduling of job and batch events, and delivery by the background worker."""
