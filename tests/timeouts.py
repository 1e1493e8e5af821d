"""The one timeout of the test suite.

Every deadline a test waits for (a daemon answering, a status change showing, a
journal entry appearing, a helper process starting or stopping) uses ``TIMEOUT``
seconds, so a slow machine is fixed in one place. Tests wait for a condition with
this deadline; they never sleep a fixed time.
"""

TIMEOUT = 10.0
