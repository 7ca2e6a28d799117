"""The HTTP API: the app and its blueprint registrations only (routes in chalicelib/)."""

from chalice import Chalice

from chalicelib.routes import api

app = Chalice(app_name="lsstctl-api")
app.register_blueprint(api)
