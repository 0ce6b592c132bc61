"""Dispatch servers: model servers, emulated instances, pool, dispatcher proxy."""
