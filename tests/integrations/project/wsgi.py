"""The WSGI application gunicorn serves.

With ``DPR_SITE_WARM_UP`` set to a file name, loading it also runs one query and writes the
backend's pid there: under ``gunicorn --preload`` the master then holds a connection of its
own when it forks the workers, as an app that touches the database at import does.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.project.settings")

application = get_wsgi_application()

if os.environ.get("DPR_SITE_WARM_UP"):
    from tests.integrations.project.views import _backend_pid

    with open(os.environ["DPR_SITE_WARM_UP"], "w") as file:
        file.write(str(_backend_pid()))
