"""The CLI's side of the REST API: one client, and every refusal turned into one message."""

import os
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

API = "/api/v1"


class CliError(Exception):
    """A message for the operator; the command exits with `code`."""

    def __init__(self, message: str, code: int = 5) -> None:
        super().__init__(message)
        self.code = code


def base_url(url: str | None) -> str:
    """The server's root from what the operator gave: tolerate a trailing /api/v1."""
    if not url:
        raise CliError("no server: give --url or set CCS_URL (`ccs login` prints it)", code=2)
    root = url.strip().rstrip("/")
    root = root.removesuffix(API).rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise CliError(f"--url: {url!r} is not an http:// or https:// address", code=2)
    return root


class Client:
    """Calls to one CCS server, as one user."""

    def __init__(self, url: str | None, token: str | None, auth: bool = True) -> None:
        self.root = base_url(url)
        headers = {"Accept": "application/json", "User-Agent": "ccs-cli/1"}
        if auth:
            if not token:
                raise CliError("no token: give --token or set CCS_TOKEN (see `ccs login`)",
                               code=2)
            headers["Authorization"] = f"Token {token}"
        self.http = httpx.Client(base_url=self.root + API, headers=headers, timeout=30)
        self.server_time: float | None = None  # from the last answer's Date header

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.root}: {exc}") from None
        if date := response.headers.get("date"):
            self.server_time = parsedate_to_datetime(date).timestamp()
        if response.status_code >= 400:
            raise CliError(refusal(response, f"{method} {API}{path}"))
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.call("POST", path, json=body or {})

    def pages(self, path: str, limit: int, **params: Any) -> list[dict]:
        """Rows of a paginated list, up to `limit` of them."""
        rows: list[dict] = []
        while len(rows) < limit:
            page = self.get(path, limit=min(limit - len(rows), 1000), offset=len(rows), **params)
            rows += page["results"]
            if not page["next"]:
                break
        return rows


def refusal(response: httpx.Response, what: str) -> str:
    """The server's refusal in one message: its sentence, then any other field it named."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        if response.status_code == 404:
            return f"HTTP 404 for {response.request.url}: is --url (CCS_URL) a CCS server?"
        return f"HTTP {response.status_code} for {what} (the server log says why)"
    detail = str(body["detail"])
    if response.status_code == 401:
        detail += " (log in again: ccs login USER)"
    extra = [f"  {field}: {message}" for field, messages in (body.get("errors") or {}).items()
             for message in messages if f"{field}: {message}" != detail and message not in detail]
    return "\n".join([detail, *extra])


def password(username: str, from_stdin: bool) -> str:
    """CCS_PASSWORD, one line of stdin, or a prompt on the terminal."""
    if from_stdin:
        import sys

        return sys.stdin.readline().rstrip("\n")
    if env := os.environ.get("CCS_PASSWORD"):
        return env
    from getpass import getpass

    return getpass(f"password for {username}: ")
