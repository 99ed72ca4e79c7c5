"""A small Django project that real servers and workers run, in processes of their own.

The parent test process hands over the database settings in ``DPR_SITE_DATABASES`` (JSON) and
the driver in ``DPR_TEST_DRIVER``; importing this package picks the driver before Django can.
"""

from tests._driver import select_driver

select_driver()
