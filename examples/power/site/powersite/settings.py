"""Settings of the example site: just enough Django, and ``APPD`` for the power services.

The ports can be moved with environment variables (the tests run the site on free ports):
``POWER_SITE_PORT`` for the power service (9001), ``POWER_SITE_PDU_PORT`` for the simulated
PDU (9100).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A demonstration site: never deploy these values.
SECRET_KEY = os.environ.get("POWER_SITE_SECRET_KEY", "demo-only-not-for-production")
DEBUG = os.environ.get("POWER_SITE_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "appd.contrib.django",
    "outlets",
]
MIDDLEWARE = [
    # The web request's X-Request-ID and remaining time go with every appd call its view makes.
    "appd.contrib.django.middleware.RequestScopeMiddleware",
    "django.middleware.common.CommonMiddleware",
]
#: Seconds a web request may spend on the power service (a web worker's timeout, less a margin).
APPD_REQUEST_DEADLINE = 10
ROOT_URLCONF = "powersite.urls"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"},
}
USE_TZ = True

POWER_PORT = int(os.environ.get("POWER_SITE_PORT", "9001"))
PDU_PORT = int(os.environ.get("POWER_SITE_PDU_PORT", "9100"))

# appd's configuration: the keys of appd.toml (docs/configuration.md, docs/django.md).
APPD = {
    "pid_file": "run/appd.pid",
    "log_file": "run/appd.log",
    # The simulated PDU (from appd-power-plugin's entry points) and this site's power service
    # (outlets/services.py).  The plugin's own `power` service is discovered too, but not run:
    # it would be a second owner of the same PDU.
    "enabled": ["pdu", "outlet_power"],
    "services": {
        "pdu": {"host": "127.0.0.1", "port": PDU_PORT, "max_connections": 5},
        "outlet_power": {
            "host": "127.0.0.1",
            "port": POWER_PORT,
            "pdu_host": "127.0.0.1",
            "pdu_port": PDU_PORT,
            # The pool is per process: one process keeps the PDU within its 5 sessions.
            "processes": 1,
            "pool_size": 5,
            "concurrency": 5,
        },
    },
}
