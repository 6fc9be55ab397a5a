"""The login page: one password field, no script, no request to anywhere but this service.

It is built here rather than served from the dashboard's static files because those are behind the
login. Its only style is inline, allowed by its hash in the content security policy.
"""

from __future__ import annotations

import base64
import hashlib
import html
from string import Template

from fastapi.responses import HTMLResponse

_STYLE = """
:root { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: #f6f7f9; }
main { width: min(22rem, 92vw); background: #fff; border: 1px solid #e3e6eb; border-radius: 8px; padding: 1.4rem; }
h1 { font-size: 1.15rem; margin: 0 0 1rem; }
label { display: block; color: #667085; font-size: .85rem; margin-bottom: .3rem; }
input[type=password] { width: 100%; font: inherit; padding: .45rem .6rem; border: 1px solid #c9ced6;
  border-radius: 4px; }
button { margin-top: .9rem; width: 100%; font: inherit; padding: .45rem; border: 0; border-radius: 4px;
  background: #1d2330; color: #fff; cursor: pointer; }
.error { background: #fdecea; color: #b42318; padding: .45rem .6rem; border-radius: 4px; margin: 0 0 .9rem; }
.hint { color: #667085; font-size: .8rem; margin: .9rem 0 0; }
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

# The hidden user name is for password managers, which file a password under one; it is not checked.
_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>fer-edge: log in</title>
  <link rel="icon" href="data:,">
  <style>$style</style>
</head>
<body>
  <main>
    <h1>fer-edge</h1>
    $message<form method="post" action="/login">
      <input type="text" name="username" value="fer-edge" autocomplete="username" hidden>
      <input type="hidden" name="next" value="$next">
      <label for="password">password</label>
      <input id="password" name="password" type="password" autocomplete="current-password" required autofocus>
      <button type="submit">log in</button>
    </form>
    <p class="hint">The password is api.password (FER_API__PASSWORD), or the one the service printed at its first
      start.</p>
  </main>
</body>
</html>
""")


def render(next_path: str, status: int = 200, error: tuple[str, str] | None = None,
           headers: dict[str, str] | None = None) -> HTMLResponse:  # fmt: skip
    """The page; ``error`` is (code, message), shown above the form and named in data-code."""
    message = ""
    if error is not None:
        code, text = error
        message = f'<p class="error" role="alert" data-code="{html.escape(code)}">{html.escape(text)}</p>\n    '
    body = _PAGE.substitute(style=_STYLE, message=message, next=html.escape(next_path))
    page_headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "same-origin"}
    return HTMLResponse(body, status_code=status, headers={**page_headers, **(headers or {})})
