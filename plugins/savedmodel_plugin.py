"""The Airflow plugin: mounts the Models page (a FastAPI app) on the API server, adds its nav entry.

`fastapi_apps` mounts the app at /registry on Airflow's API server (same origin, same login);
`external_views` adds "Models" to the UI's navigation and shows the app inside the UI
(`/plugin/models`); `fastapi_root_middlewares` makes a label move need the right to trigger its
pipeline on every route (plugins/savedmodel_promote_rights.py). The app itself lives in
plugins/savedmodel_registry_app.py and is imported on its first request, so loading this plugin
costs every other Airflow process nothing (the middleware's module imports only the standard
library until a promote run is asked for).
"""

from __future__ import annotations

import importlib

from airflow.plugins_manager import AirflowPlugin

from plugins.savedmodel_promote_rights import PromoteRightsMiddleware

URL_PREFIX = "/registry"


class RegistryApp:
    """An ASGI app that builds the registry's FastAPI app on its first request, then passes requests on."""

    def __init__(self, module: str = "plugins.savedmodel_registry_app") -> None:
        self.module = module
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        """Serves one ASGI request (importing the app module the first time)."""
        if self._app is None:
            self._app = importlib.import_module(self.module).app
        await self._app(scope, receive, send)


class SavedModelRegistryPlugin(AirflowPlugin):
    """Adds the Models pages (registry, lineage, label moves behind approval) to the Airflow UI."""

    name = "savedmodel_registry"
    fastapi_apps = [{"app": RegistryApp(), "url_prefix": URL_PREFIX, "name": "SavedModel registry"}]
    # A promote run is created (REST, the UI's trigger form) only by someone who may trigger the
    # pipeline whose labels it moves (plugins/savedmodel_promote_rights.py).
    fastapi_root_middlewares = [
        {"middleware": PromoteRightsMiddleware, "name": "Label moves authorized by their pipeline"}
    ]
    external_views = [
        {
            "name": "Models",
            "href": f"{URL_PREFIX}/",
            "icon": f"{URL_PREFIX}/icon.svg",
            "destination": "nav",
            "url_route": "models",
            "nav_top_level": True,
        }
    ]
