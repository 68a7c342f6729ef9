"""The Django app: INSTALLED_APPS entry "multicore.contrib.django" (or
"multicore.contrib.django.MulticoreConfig"). See the package's docstring
and docs/django.md."""

from django.apps import AppConfig, apps
from django.core import checks

import multicore.contrib.django as mc_django


class MulticoreConfig(AppConfig):
    name = "multicore.contrib.django"
    label = "multicore"
    verbose_name = "multicore"
    default = True

    def ready(self):
        checks.register(check_installed_last)
        conf = mc_django.get_settings()
        if mc_django.autostart_enabled(conf):
            mc_django.start(conf)


def check_installed_last(app_configs=None, **kwargs):
    """multicore.W001: ready() imports the URLconf and forks the workers, so
    the apps after this one are not ready yet (an admin URLconf imported
    before django.contrib.admin's ready() misses the registered models, and
    the workers miss what those apps set up in their ready())."""
    configs = list(apps.get_app_configs())
    if configs and configs[-1].name != MulticoreConfig.name:
        after = [c.name for c in configs[[c.name for c in configs].index(MulticoreConfig.name) + 1:]]
        return [checks.Warning(
            "multicore.contrib.django is not the last entry of INSTALLED_APPS",
            hint=("Its ready() imports MULTICORE['preload'] (the URLconf by "
                  "default) and forks the workers before the ready() of "
                  f"{', '.join(after)}; move it to the end."),
            obj="settings.INSTALLED_APPS",
            id="multicore.W001")]
    return []
