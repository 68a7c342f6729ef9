"""Integrations of multicore with other software.

    multicore.contrib.django    a Django app that starts the pool when
                                Django starts (docs/django.md)

Importing this package imports nothing else; each integration needs its
framework installed.
"""
