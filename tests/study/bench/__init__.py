"""Tests of study.bench, one module per module of it.

This folder is a package so that pytest imports its modules as bench.test_*: tests/study/test_storage.py
and tests/study/bench/test_storage.py would otherwise both be the module test_storage."""
