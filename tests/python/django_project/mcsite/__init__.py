"""A small Django site that renders a list on multicore's workers
(tests/python/test_django.py runs it)."""
