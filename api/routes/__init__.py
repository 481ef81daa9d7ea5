"""The API's routes, one router per concern; :func:`api.app.create_app` includes them."""
