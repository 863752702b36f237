"""jinja2 pages: one environment, autoescaped, templates in `web/templates/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from web.keys import services

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def page(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """Render a page. `data` (if given) goes to the page's script as JSON, never inline JS."""
    svc = services(request)
    data = context.pop("data", None)
    html = _env.get_template(template).render(
        practice_name=svc.settings.practice_name,
        page_data=json.dumps(data).replace("</", "<\\/") if data is not None else None,
        **context,
    )
    return web.Response(text=html, content_type="text/html", status=status)
