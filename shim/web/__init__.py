"""The aiohttp face of the shim: the application, its routes and middleware, the handlers, metrics and
logs. `ShimState` lives in `shim_state` so that nothing imports `app` back."""
