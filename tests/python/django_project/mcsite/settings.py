"""Settings of the test site. Environment variables (set by the tests):
MCSITE_DB (sqlite file), MCSITE_WORKERS, MCSITE_EXIT_LOG (worker_exit
appends to it), MCSITE_MULTICORE_FIRST (put multicore first in
INSTALLED_APPS, to see the multicore.W001 warning)."""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "multicore-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "mcsite.apps.McsiteConfig",
    # Last: its ready() imports the URLconf (and so the views) and forks.
    "multicore.contrib.django",
]
if os.environ.get("MCSITE_MULTICORE_FIRST"):
    INSTALLED_APPS.reverse()

MULTICORE = {
    "workers": int(os.environ.get("MCSITE_WORKERS", "2")),
    "worker_init": "mcsite.workers.init",
    "worker_exit": "mcsite.workers.exit",
}

MIDDLEWARE = []
ROOT_URLCONF = "mcsite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("MCSITE_DB",
                               os.path.join(tempfile.gettempdir(), "mcsite.sqlite3")),
    },
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
