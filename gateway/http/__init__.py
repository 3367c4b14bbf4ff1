"""The main listener as Tornado ``RequestHandler``s: the application (app.py), the conductor
(handler.py), the response writer and its phases (response.py), the ``/-/`` endpoints
(endpoints.py)."""
