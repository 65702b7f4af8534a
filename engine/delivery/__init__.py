"""Delivery core: per-lane mailboxes that coalesce, order, pace and retry Live Activity pushes."""
