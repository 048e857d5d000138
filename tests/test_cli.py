"""Operator commands, run as ``flask --app app ...`` on a data folder, as an operator would."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager, suppress

import pytest
import requests
from tinydb import TinyDB, where

from app import create_app
from schemas import CORE_USER_URN

from .conftest import REPO, LiveServer, create_key_with_cli, free_port, run_cli


def test_key_create_works_on_a_fresh_data_folder_and_stores_only_a_hash(tmp_path):
    data_dir = tmp_path / "data"
    token = create_key_with_cli(data_dir)
    assert len(token) >= 43  # 256 bits, base64url
    stored = "".join(path.read_text() for path in data_dir.iterdir() if path.is_file())
    assert token not in stored
    assert '"name":"Test key"' in stored


def test_the_new_token_opens_the_scim_api_and_a_deleted_key_no_longer_does(tmp_path):
    data_dir = tmp_path / "data"
    token = create_key_with_cli(data_dir)
    headers = {"Authorization": f"Bearer {token}"}
    with app_on(data_dir) as client:
        assert client.get("/v2/Users", headers=headers).status_code == 200
    key_id = run_cli(data_dir, "key", "list").stdout.split()[0]
    assert run_cli(data_dir, "key", "delete", key_id).returncode == 0
    with app_on(data_dir) as client:
        assert client.get("/v2/Users", headers=headers).status_code == 401


@contextmanager
def app_on(data_dir):
    app = create_app({"DATA_DIR": str(data_dir)})
    try:
        yield app.test_client()
    finally:
        app.extensions["roster.store"].close()


def test_key_list_shows_names_and_never_tokens(tmp_path):
    data_dir = tmp_path / "data"
    token = create_key_with_cli(data_dir)
    listing = run_cli(data_dir, "key", "list").stdout
    assert "Default" in listing and "Test key" in listing and "last used never" in listing
    assert token not in listing


def test_directories_are_created_and_listed(tmp_path):
    data_dir = tmp_path / "data"
    assert (
        run_cli(data_dir, "directory", "create", "Fabrikam", "--description", "x").returncode == 0
    )
    listing = run_cli(data_dir, "directory", "list").stdout
    assert "Default" in listing and "Fabrikam  0 users" in listing
    duplicate = run_cli(data_dir, "directory", "create", "fabrikam")
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr


def test_a_directory_name_with_a_control_character_is_refused(tmp_path):
    result = run_cli(tmp_path / "data", "directory", "create", "a\x07b")
    assert result.returncode != 0 and "non-printing characters" in result.stderr
    assert "Traceback" not in result.stderr


def test_local_sign_in_is_the_way_back_in_after_a_broken_provider_setting(tmp_path):
    data_dir = tmp_path / "data"
    with app_on(data_dir) as app:
        store = app.application.extensions["roster.store"]
        default = store.find_directory_by_name("Default")
        settings = {"configuration_url": "http://127.0.0.1:1/none", "client_id": "c"}
        store.set_sign_in(default["id"], "oidc", {**settings, "client_secret": "x"}, "test")
    result = run_cli(data_dir, "directory", "local-sign-in", "default")
    assert result.returncode == 0, result.stderr
    with app_on(data_dir) as app:
        store = app.application.extensions["roster.store"]
        directory = store.find_directory_by_name("Default")
    assert directory["auth_method"] == "local"
    assert directory["oidc"]["configuration_url"] == settings["configuration_url"]  # kept


def test_a_key_for_an_unknown_directory_is_refused(tmp_path):
    result = run_cli(tmp_path / "data", "key", "create", "--directory", "Nope", "--name", "k")
    assert result.returncode != 0
    assert 'no directory named "Nope"' in result.stderr


def test_a_key_name_with_a_line_break_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    result = run_cli(data_dir, "key", "create", "--directory", "Default", "--name", "a\nb")
    assert result.returncode != 0 and "no line breaks" in result.stderr
    assert run_cli(data_dir, "key", "list").stdout == ""


def test_the_secret_key_is_generated_once_and_private(tmp_path):
    data_dir = tmp_path / "data"
    with app_on(data_dir) as first:
        first_key = first.application.config["SECRET_KEY"]
    with app_on(data_dir) as second:
        assert second.application.config["SECRET_KEY"] == first_key
    assert len(first_key) == 64
    mode = stat.S_IMODE(os.stat(data_dir / "secret_key").st_mode)
    assert mode == 0o600


def test_an_empty_secret_key_file_left_by_a_crash_is_replaced(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("")
    with app_on(data_dir) as client:
        key = client.application.config["SECRET_KEY"]
    assert len(key) == 64 and (data_dir / "secret_key").read_text() == key
    assert not list(data_dir.glob(".roster-*"))


def test_the_secret_key_survives_a_starting_server_sweeping_its_temp_file(tmp_path, monkeypatch):
    """A server that starts while another process creates the key removes temp files it
    takes for a crash's leftovers; the key is made again, not lost."""
    data_dir = tmp_path / "data"
    real_link, swept = os.link, []

    def link_after_a_sweep(source, target):
        if not swept:
            swept.append(source)
            os.unlink(source)
        return real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_a_sweep)
    with app_on(data_dir) as client:
        key = client.application.config["SECRET_KEY"]
    assert swept and len(key) == 64 and (data_dir / "secret_key").read_text() == key
    assert not list(data_dir.glob(".roster-*"))


def test_the_secret_key_is_created_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    def no_hard_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    data_dir = tmp_path / "data"
    with app_on(data_dir) as first:
        key = first.application.config["SECRET_KEY"]
    with app_on(data_dir) as second:
        assert second.application.config["SECRET_KEY"] == key
    assert len(key) == 64 and (data_dir / "secret_key").read_text() == key
    assert stat.S_IMODE(os.stat(data_dir / "secret_key").st_mode) == 0o600
    assert not list(data_dir.glob(".roster-*"))


def test_while_the_server_runs_writes_are_refused_and_reads_work(live_server):
    refused = run_cli(
        live_server.data_dir, "key", "create", "--directory", "Default", "--name", "x"
    )
    assert refused.returncode != 0
    assert "stop the server" in refused.stderr and "another Roster process" in refused.stderr
    listing = run_cli(live_server.data_dir, "key", "list")
    assert listing.returncode == 0 and "Test key" in listing.stdout and " x " not in listing.stdout


def test_a_second_server_on_the_same_folder_refuses_to_start(live_server):
    second = LiveServer(live_server.data_dir)
    with pytest.raises(RuntimeError) as refused:
        second.start()
    assert "Roster cannot start: another Roster process" in str(refused.value)


@contextmanager
def flask_run(data_dir, *options: str):
    """``flask --app app run`` in its own process group (``--debug`` starts a second,
    serving process), stopped with the whole group."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port), *options],
        cwd=REPO,
        env={**os.environ, "ROSTER_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    process.url = f"http://127.0.0.1:{port}"
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):  # the group outlives a leader that refused
            os.killpg(process.pid, signal.SIGTERM)
        process.output = process.communicate(timeout=30)[0]


def wait_for_answer(process, url: str) -> None:
    """With ``--debug`` the reloader listens before the serving process has loaded the
    app, so a connection can be accepted and then wait: a read timeout means "not yet"."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        with suppress(requests.ConnectionError, requests.Timeout):
            requests.get(url, timeout=(1, 5))
            return
        time.sleep(0.1)
    raise AssertionError("flask run did not answer")


def test_flask_run_beside_a_running_server_refuses_to_start(live_server):
    with flask_run(live_server.data_dir) as second:
        with suppress(subprocess.TimeoutExpired):
            second.wait(timeout=30)
        refused = second.poll() is not None
    assert refused, "flask run went on serving beside the running server"
    assert second.returncode != 0
    assert "Roster cannot start: another Roster process" in second.output


@pytest.mark.parametrize("options", [(), ("--debug",)], ids=["plain", "reloader"])
def test_flask_run_owns_a_free_folder_and_serves_writes(tmp_path, options):
    """With ``--debug`` the reloader's process loads the app too: it must leave the folder
    to the process that serves, or that one would be refused."""
    data_dir = tmp_path / "data"
    token = create_key_with_cli(data_dir)
    user = {"schemas": [CORE_USER_URN], "userName": "ana@contoso.example", "displayName": "Ana"}
    with flask_run(data_dir, *options) as server:
        wait_for_answer(server, f"{server.url}/v2/ServiceProviderConfig")
        created = requests.post(
            f"{server.url}/v2/Users",
            json=user,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        refused = run_cli(data_dir, "key", "create", "--directory", "Default", "--name", "x")
    assert created.status_code == 201, created.text
    assert refused.returncode != 0 and "stop the server" in refused.stderr
    assert server.output.count(f"create one: {server.url}/setup/") == 1  # the server's alone
    assert run_cli(data_dir, "backup", str(tmp_path / "backup.json")).returncode == 0
    users = TinyDB(str(tmp_path / "backup.json")).table("users")
    assert users.get(where("id") == created.json()["id"]) is not None


def test_backup_of_a_running_server_is_a_tinydb_database_with_its_users(live_server, scim_session):
    created = scim_session.post(
        f"{scim_session.base}/Users",
        json={"schemas": [CORE_USER_URN], "userName": "ana@contoso.example", "displayName": "Ana"},
    ).json()
    backup = live_server.data_dir.parent / "backup.json"
    result = run_cli(live_server.data_dir, "backup", str(backup))
    assert result.returncode == 0, result.stderr
    users = TinyDB(str(backup)).table("users")
    assert users.get(where("id") == created["id"])["resource"]["userName"] == "ana@contoso.example"
