"""Shared test helpers: in-memory kits, HTTP clients and fakes used by more than one test module."""
