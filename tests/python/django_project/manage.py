#!/usr/bin/env python
"""The test site's manage.py: python manage.py runserver, check, shell..."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mcsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
