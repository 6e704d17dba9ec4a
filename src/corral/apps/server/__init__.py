"""``corral serve``: the HTTP API (OpenAPI at ``/api/openapi.json``) and the web UI, from one process,
over the same journal the CLI uses. See ``docs/ui.md``.

>>> import tempfile, pathlib
>>> home = pathlib.Path(tempfile.mkdtemp())
>>> config = ServerConfig(journal=home / "j.db", token_file=home / "token", chart_dir=home / "c")
>>> app = create_app(config)
>>> sorted(app.openapi()["paths"])[:3]
['/api/approvals', '/api/approvals/{approval_id}', '/api/approvals/{approval_id}/approve']
"""

from corral.apps.server._app import create_app
from corral.apps.server._auth import TokenStore
from corral.apps.server._state import ServerConfig

__all__ = ["ServerConfig", "TokenStore", "create_app"]
