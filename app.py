"""Roster's application factory: configuration, the store, the SCIM API, the pages and the
operator CLI.

``waitress-serve --call app:create_app`` serves it; ``flask --app app <command>`` runs operator
commands against the same data folder.
"""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import click
from flask import Flask, Response, current_app, request
from flask.cli import AppGroup, run_command
from flask.helpers import get_debug_flag
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import is_running_from_reloader

import admin
import admin_users
import auth
import pages
import scim
from store import (
    DEFAULT_DIRECTORY,
    DataFolderBusy,
    InvalidValueError,
    NotFoundError,
    Store,
    StoreClosed,
    UniquenessError,
    create_file_once,
)

SECRET_KEY_FILE = "secret_key"
CLI_ACTOR = "cli"

csrf = CSRFProtect()


class RosterFlask(Flask):
    """Flask, remembering which views and hooks are coroutines.

    Flask asks ``inspect.iscoroutinefunction`` of every hook and the view on every request:
    seven times per SCIM request here, about 3 % of a PATCH's CPU. A function does not change
    its nature, so the answer is kept per function.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable, Callable] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        try:
            return self._synchronous[func]
        except KeyError:
            synchronous = self._synchronous[func] = super().ensure_sync(func)
            return synchronous


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then environment, then the test config (Flask's tutorial order)."""
    app = RosterFlask(__name__)
    public_url = os.environ.get("ROSTER_PUBLIC_URL") or None
    app.config.from_mapping(
        DATA_DIR=os.environ.get("ROSTER_DATA_DIR", os.path.join(os.getcwd(), "data")),
        PUBLIC_URL=public_url,
        MICROSOFT_AUTHORITY=os.environ.get(
            "ROSTER_MICROSOFT_AUTHORITY", auth.DEFAULT_MICROSOFT_AUTHORITY
        ).rstrip("/"),
        MAX_CONTENT_LENGTH=1024 * 1024,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=(public_url or "").startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(
            minutes=whole_number_from_environment("ROSTER_SESSION_MINUTES", 480, minimum=1)
        ),
        TRUST_PROXY=whole_number_from_environment("ROSTER_TRUST_PROXY", 0),
        # A form's token lives as long as the session it is bound to, so a page left open for
        # an hour can still be sent.
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_CHECK_DEFAULT=False,  # protect_forms_from_forgery calls it instead
    )
    if test_config:
        app.config.from_mapping(test_config)
    os.makedirs(app.config["DATA_DIR"], exist_ok=True)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("ROSTER_SECRET_KEY") or load_or_create_secret_key(
            app.config["DATA_DIR"]
        )

    store = open_store(app.config["DATA_DIR"])
    app.extensions["roster.store"] = store
    if not store.read_only:
        ensure_default_directory(store)

    csrf.init_app(app)
    app.before_request(protect_forms_from_forgery)
    app.register_error_handler(StoreClosed, refuse_writes_while_closed)
    scim.init_app(app)
    pages.init_app(app)
    auth.init_app(app)
    app.wsgi_app = SecurityHeaders(
        RequestLogging(app.wsgi_app), https=(app.config["PUBLIC_URL"] or "").startswith("https://")
    )
    admin.init_app(app)
    admin_users.init_app(app)
    if app.config["TRUST_PROXY"]:
        hops = app.config["TRUST_PROXY"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    if not store.read_only and not in_operator_command():
        announce_setup_link(app, store)
    app.cli.add_command(key_cli)
    app.cli.add_command(directory_cli)
    app.cli.add_command(backup_command)
    return app


def refuse_writes_while_closed(error: StoreClosed) -> Response:
    """A write while the store refuses them (shutting down, or after a failed fsync): 503
    and the reason, as a SCIM error under /v2, rather than a bare 500."""
    if request.path.startswith("/v2"):
        return scim.error_response(503, str(error))
    return Response(f"Service unavailable: {error}\n", 503, mimetype="text/plain")


SECURITY_HEADERS = {
    # No inline script or style anywhere: the pages load /static files only, so a value that
    # slipped past escaping still could not run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: Flask-WTF checks the Referer of form posts over HTTPS.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
# Only where the public URL is https: browsers then refuse plain http to this host for a year,
# so a network that strips TLS cannot serve them a plain-http sign-in page and read the
# password typed into it. Not includeSubDomains: the company's other sites are not ours to bind.
STRICT_TRANSPORT_SECURITY = ("Strict-Transport-Security", "max-age=31536000")


def protect_forms_from_forgery() -> None:
    """Flask-WTF's CSRF check on every form post. /v2 is left out: it authenticates each
    request by bearer token, not cookie, so there is no cross-site request to forge.

    Our own hook rather than Flask-WTF's, which looks up the view and its blueprint's
    exemptions before it looks at the method: here a SCIM request costs one comparison.
    """
    if request.blueprint == scim.bp.name:
        return
    csrf.protect(apply_exemptions=True)


class SecurityHeaders:
    """WSGI middleware: the headers above on every response that does not set its own (and
    Strict-Transport-Security when Roster is served over https).

    Added as plain tuples at ``start_response``: through werkzeug's ``Headers`` the four cost
    about 90,000 instructions per request (a check of each value as it is added and again as
    it is sent), over a tenth of a GET by id. A page whose form leads to an identity provider
    (the login page) names the provider's origin in the environ under
    ``pages.FORM_ACTION_ORIGINS``, since browsers hold the redirect after a form submission
    to ``form-action`` as well.
    """

    _CSP = "content-security-policy"

    def __init__(self, wsgi_app: Callable, https: bool = False) -> None:
        self.wsgi_app = wsgi_app
        headers = [*SECURITY_HEADERS.items(), *([STRICT_TRANSPORT_SECURITY] if https else [])]
        self._headers = [(name.lower(), name, value) for name, value in headers]

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        def start_with_security_headers(status: str, headers: list, exc_info: Any = None) -> Any:
            present = {name.lower() for name, _value in headers}
            for lowered, name, value in self._headers:
                if lowered in present:
                    continue
                if lowered == self._CSP and environ.get(pages.FORM_ACTION_ORIGINS):
                    allowed = " ".join(["'self'", *environ[pages.FORM_ACTION_ORIGINS]])
                    value = value.replace("form-action 'self'", f"form-action {allowed}")
                headers.append((name, value))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_with_security_headers)


def whole_number_from_environment(name: str, default: int, minimum: int = 0) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise SystemExit(
            f"Roster cannot start: {name} must be a whole number of at least {minimum}, "
            f"not {value!r}"
        )
    return int(value)


def announce_setup_link(app: Flask, store: Store) -> None:
    """First run: while no administrator exists, each start prints one line with a new
    one-time link to the page that creates the first one. Operator commands print nothing:
    their process, and the token with it, is gone a moment later."""
    if store.count_administrators():
        return
    token = auth.issue_setup_token(app)
    print(
        "Roster has no administrator yet. Open this one-time link to create one: "
        f"{served_base_url(app)}{pages.SETUP_PATH}{token}",
        file=sys.stderr,
        flush=True,
    )


def served_base_url(app: Flask, argv: list[str] | None = None) -> str:
    """Where a browser reaches this server: ROSTER_PUBLIC_URL, else the address ``flask run``
    serves on, else the one on the waitress-serve command line (``--listen=HOST:PORT``, or
    ``--host``/``--port``), else waitress's default port on this machine."""
    if app.config["PUBLIC_URL"]:
        return app.config["PUBLIC_URL"].rstrip("/")
    flask_run = flask_run_context()
    if flask_run is not None:
        return local_url(str(flask_run.params["host"]), str(flask_run.params["port"]))
    options: dict[str, str] = {}
    arguments = sys.argv if argv is None else argv
    for index, argument in enumerate(arguments):
        name, equals, value = argument.partition("=")
        if name in ("--listen", "--host", "--port"):
            if not equals and index + 1 < len(arguments):
                value = arguments[index + 1]
            options.setdefault(name, value)
    host, port = "", "8080"
    if "--listen" in options:
        host, _, port = options["--listen"].rpartition(":")
    return local_url(options.get("--host", host), options.get("--port", port))


def local_url(host: str, port: str) -> str:
    """The URL of a listening address; one that listens on every interface is named
    ``localhost``, which the browser on this machine reaches."""
    if host in ("", "0.0.0.0", "*", "[::]", "::"):
        host = "localhost"
    return f"http://{host}:{port}"


def open_store(data_dir: str) -> Store:
    """A server owns its data folder; a second server refuses to start beside it.

    ``waitress-serve`` and ``flask run`` are servers. Operator commands (``flask key create``
    and the like) fall back to a read-only view when a server owns the folder, so listing
    works and writing says what to do. ``flask run --reload`` (or ``--debug``) loads the app
    in two processes; only the second serves, so the first, which watches the files, reads.
    """
    if in_operator_command():
        return Store.open_or_view(data_dir)
    flask_run = flask_run_context()
    if flask_run is not None and watches_files_for_reload(flask_run):
        return Store(data_dir, read_only=True)
    try:
        store = Store(data_dir)
    except DataFolderBusy as busy:
        raise SystemExit(f"Roster cannot start: {busy}") from None
    atexit.register(store.close)
    exit_cleanly_on_sigterm()
    return store


def flask_run_context() -> click.Context | None:
    """The context of ``flask run`` when this process runs it: a server like waitress-serve."""
    context = click.get_current_context(silent=True)
    return context if context is not None and context.command is run_command else None


def in_operator_command() -> bool:
    """Under a ``flask`` command other than ``run``: a process gone a moment later."""
    return click.get_current_context(silent=True) is not None and flask_run_context() is None


def watches_files_for_reload(flask_run: click.Context) -> bool:
    """Whether this process is ``flask run``'s reloader, which starts the serving process
    and restarts it on every code change, serving nothing itself."""
    reload = flask_run.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    return bool(reload) and not is_running_from_reloader()


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (systemd, docker, kill) into a normal exit, so the atexit hooks run: the
    store compacts its journal and the request log writes out what it has queued."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))


def load_or_create_secret_key(data_dir: str) -> str:
    """The session-signing key: generated once, kept in the data folder readable by us alone,
    and written whole or not at all: an empty key file would break every sign-in."""
    path = os.path.join(data_dir, SECRET_KEY_FILE)
    return create_file_once(path, secrets.token_hex(32).encode()).decode()


def ensure_default_directory(store: Store) -> None:
    """A fresh store gets the "Default" directory, so a first key has somewhere to live."""
    if store.list_directories():
        return
    with suppress(UniquenessError):  # another process created it first
        store.create_directory(DEFAULT_DIRECTORY, "Created on first start")


class RequestLogging:
    """WSGI middleware: one line per request on the request log (:class:`RequestLog`): method,
    path and query, status, milliseconds, and the directory key's name. Never a body or a token.

    Read from the environ rather than in Flask hooks: the ``request`` and ``g`` proxies a pair
    of before/after_request hooks went through cost a tenth of a request to /v2 that does
    nothing else. SCIM names the key it verified in the environ under ``scim.KEY_NAME``. A
    path that carries a secret (the setup link) is logged without it, and the sign-in
    callback without its query, which holds an authorization code.
    """

    def __init__(self, wsgi_app: Callable) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        started = time.perf_counter()
        statuses = []

        def start_noting_status(status: str, headers: list, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start_noting_status)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            request_log().add(
                f"{environ.get('REQUEST_METHOD')} {loggable(logged_target(environ))} "
                f"{statuses[-1][:3] if statuses else '500'} {elapsed_ms:.1f}ms "
                f"key={loggable_name(environ.get(scim.KEY_NAME, '-'))}"
            )


def logged_target(environ: dict) -> str:
    """The request's target as the log shows it: without the secrets some paths carry."""
    path = environ.get("PATH_INFO", "")
    if path.startswith(pages.SETUP_PATH):
        return f"{pages.SETUP_PATH}[token]"
    if path == auth.CALLBACK_PATH:
        return path
    return request_target(environ)


class RequestLog:
    """Request threads only append (time, line) to a deque; one thread writes what has
    gathered to stderr every ``interval`` seconds, in one write, and once more at exit.

    Not Python's ``logging``: its LogRecord, caller lookup and Formatter cost about 88,000
    instructions per line, a tenth of a GET's, for a line that needs a time and a string.
    Writing from every thread made them queue on a lock, and waking a listener thread per line
    made the GIL change hands on every request. A line reaches stderr at most ``interval``
    seconds late (a ``kill -9`` loses that much log). The stream is whatever ``sys.stderr`` is
    when a batch goes out, not the one at start: the log outlives the app that made it, and a
    test harness swaps and closes its streams.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.pending: deque[tuple[float, str]] = deque()
        self._write_lock = threading.Lock()
        self._closing = threading.Event()
        self._second = (-1, "")  # the last whole second formatted, and its text
        self._writer = threading.Thread(target=self._write_periodically, daemon=True)
        self._writer.name = "roster-request-log"
        self._writer.start()

    def add(self, line: str) -> None:
        self.pending.append((time.time(), line))

    def _write_periodically(self) -> None:
        while not self._closing.wait(self.interval):
            self.flush()

    def _timestamp(self, moment: float) -> str:
        """Local time as logging writes it (2026-11-27 09:17:37,096), formatted once a second."""
        second = int(moment)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        return f"{self._second[1]},{int((moment - second) * 1000):03d}"

    def flush(self) -> None:
        with self._write_lock:
            lines = []
            while self.pending:
                moment, line = self.pending.popleft()
                lines.append(f"{self._timestamp(moment)} {line}")
            if lines:
                with suppress(ValueError, OSError):  # stderr closed under us: nothing to do
                    sys.stderr.write("\n".join(lines) + "\n")
                    sys.stderr.flush()

    def close(self) -> None:
        self._closing.set()
        if self._writer.is_alive() and self._writer is not threading.current_thread():
            self._writer.join()
        self.flush()


_request_log: RequestLog | None = None
_request_log_lock = threading.Lock()


def request_log() -> RequestLog:
    """The process's one request log, started by the first request that writes to it."""
    global _request_log
    if _request_log is None:
        with _request_log_lock:
            if _request_log is None:
                log = RequestLog()
                atexit.register(log.close)
                _request_log = log
    return _request_log


def request_target(environ: dict) -> str:
    """Path and query as the client sent them (still percent-encoded), without werkzeug's
    decoding and re-encoding, which costs more than the rest of the log line."""
    target = environ.get("REQUEST_URI")
    if target is None:
        query = environ.get("QUERY_STRING")
        target = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
    return target


def loggable_name(name: str) -> str:
    """A key's name as it reads, unless it holds a non-printing character such as a newline
    (the store refuses them, but a data folder may predate that): then percent-encoded."""
    return name if name.isprintable() else loggable(name)


def loggable(text: str) -> str:
    """Percent-encode what could forge or break a log line (newlines, NUL, spaces)."""
    return quote(text, safe="/?&=:;,+@!$'()*[]~%\"-._", errors="backslashreplace")


# -- operator CLI -------------------------------------------------------------------------------

key_cli = AppGroup("key", help="Directory keys: the bearer tokens Entra ID provisions with.")
directory_cli = AppGroup("directory", help="Directories.")


def cli_store(writes: bool = False) -> Store:
    """The app's store; a command that writes is refused while the server owns the folder."""
    store = current_app.extensions["roster.store"]
    if writes and store.read_only:
        raise click.ClickException(
            f"{store.busy_reason}. This command changes data, and only the running server may: "
            "stop the server, run this command again, then start the server."
        )
    return store


def directory_named(store: Store, name: str) -> dict:
    directory = store.find_directory_by_name(name)
    if directory is None:
        raise click.ClickException(
            f'no directory named "{name}" (see: flask --app app directory list)'
        )
    return directory


@key_cli.command("create")
@click.option("--directory", "directory_name", required=True, help="Directory name.")
@click.option("--name", required=True, help='Key name, e.g. "Microsoft integration key".')
def create_key_command(directory_name: str, name: str) -> None:
    """Create a key and print its access token (shown this once only)."""
    store = cli_store(writes=True)
    directory = directory_named(store, name=directory_name)
    try:
        key, token = auth.create_directory_key(store, directory["id"], name, CLI_ACTOR)
    except InvalidValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Key {key['id']} ({name}) created in directory {directory['name']}.")
    click.echo("Access token (shown once; paste it into Entra ID as the Secret Token):")
    click.echo(token)


@key_cli.command("list")
@click.option("--directory", "directory_name", default=None, help="Only this directory.")
def list_keys_command(directory_name: str | None) -> None:
    """List keys: id, directory, name, created, last used."""
    store = cli_store()
    directory_id = directory_named(store, directory_name)["id"] if directory_name else None
    names = {d["id"]: d["name"] for d in store.list_directories()}
    for key in store.list_keys(directory_id):
        click.echo(
            f"{key['id']}  {names.get(key['directory_id'], '?')}  {key['name']}  "
            f"created {key['created']}  last used {key['last_used'] or 'never'}"
        )


@key_cli.command("delete")
@click.argument("key_id")
def delete_key_command(key_id: str) -> None:
    """Delete a key: its token stops working at once."""
    try:
        cli_store(writes=True).delete_key(key_id, CLI_ACTOR)
    except NotFoundError:
        raise click.ClickException(f"no key with id {key_id}") from None
    click.echo(f"Key {key_id} deleted.")


@directory_cli.command("create")
@click.argument("name")
@click.option("--description", default="", help="Up to 250 characters.")
def create_directory_command(name: str, description: str) -> None:
    """Create a directory."""
    try:
        directory = cli_store(writes=True).create_directory(name, description, actor=CLI_ACTOR)
    except (UniquenessError, InvalidValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Directory {directory['name']} created ({directory['id']}).")


@directory_cli.command("local-sign-in")
@click.argument("name")
def local_sign_in_command(name: str) -> None:
    """Switch a directory to local accounts: the way back in when its Microsoft or OpenID
    Connect settings keep every administrator out. Its provider settings are kept."""
    store = cli_store(writes=True)
    directory = directory_named(store, name)
    store.set_sign_in(directory["id"], "local", None, CLI_ACTOR)
    click.echo(
        f"Directory {directory['name']} now signs in with local accounts: its users with a "
        "password sign in with it on the login page."
    )


@directory_cli.command("list")
def list_directories_command() -> None:
    """List directories with their user counts."""
    store = cli_store()
    for directory in store.list_directories():
        users = store.count_users(directory["id"])
        click.echo(f"{directory['id']}  {directory['name']}  {users} users")


@click.command("backup")
@click.argument("path")
def backup_command(path: str) -> None:
    """Write a consistent TinyDB snapshot of all data to PATH (safe while the server runs)."""
    seq = cli_store().backup(path)
    click.echo(f"Backup written to {path} (journal sequence {seq}).")
