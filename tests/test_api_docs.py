"""The interactive API documentation at /api/v0/docs is served whole by Wharf: every script,
style and icon the page loads comes from the same server (no CDN), so it works offline."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class Loads(HTMLParser):
    """The URLs a page makes the browser fetch: scripts, stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("script", "img") and found.get("src"):
            self.urls.append(str(found["src"]))
        if tag == "link" and found.get("href"):
            self.urls.append(str(found["href"]))


def test_the_docs_page_loads_its_scripts_and_styles_from_wharf(server, client):
    page = client.get("/api/v0/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    parser = Loads()
    parser.feed(page.text)
    assert len(parser.urls) == 3, parser.urls  # the script, the stylesheet, the icon
    for url in parser.urls:
        absolute = urljoin(f"{server.url}/api/v0/docs", url)
        assert urlsplit(absolute).netloc == f"127.0.0.1:{server.port}", url
        response = client.get(absolute)
        assert response.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert response.headers["content-type"].startswith(EXPECTED_TYPES[suffix]), url
        assert len(response.content) > 1000, url
    bundle = client.get(next(url for url in parser.urls if url.endswith(".js"))).text
    assert "SwaggerUIBundle" in bundle
    assert "url: '/api/v0/openapi.json'" in page.text
    assert client.get("/api/v0/openapi.json").json()["info"]["title"] == "Wharf admin API"


def test_only_the_page_assets_are_served(client):
    response = client.get("/api/v0/docs/assets/redoc.standalone.js")
    assert response.status_code == 404
    assert "redoc.standalone.js" in response.json()["errors"][0]["message"]
    assert client.get("/api/v0/docs/assets/../core.py").status_code == 404
