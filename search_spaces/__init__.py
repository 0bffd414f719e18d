"""YAML search spaces shipped with cxr-tune (package data)."""
