import warnings

from django.apps import AppConfig


class McsiteConfig(AppConfig):
    name = "mcsite"

    def ready(self):
        # An app that queries the database while Django starts (it happens):
        # multicore.contrib.django must close this connection before it
        # forks, or every worker would share its socket.
        from django.db import connection
        with warnings.catch_warnings():
            # Django >= 5.0 discourages exactly this
            warnings.simplefilter("ignore", RuntimeWarning)
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
