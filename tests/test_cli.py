"""Operator commands, run as ``flask --app app ...`` on a data folder, as an operator would."""

from __future__ import annotations

import os
import stat

from app import create_app

from .conftest import create_key_with_cli, run_cli


def test_key_create_works_on_a_fresh_data_folder_and_stores_only_a_hash(tmp_path):
    data_dir = tmp_path / "data"
    token = create_key_with_cli(data_dir)
    assert len(token) >= 43  # 256 bits, base64url
    database = (data_dir / "roster.json").read_text()
    assert token not in database
    assert '"name":"Test key"' in database


def test_the_new_token_opens_the_scim_api_and_a_deleted_key_no_longer_does(tmp_path):
    data_dir = tmp_path / "data"
    token = create_key_with_cli(data_dir)
    client = create_app({"DATA_DIR": str(data_dir)}).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v2/Users", headers=headers).status_code == 200
    key_id = run_cli(data_dir, "key", "list").stdout.split()[0]
    assert run_cli(data_dir, "key", "delete", key_id).returncode == 0
    assert client.get("/v2/Users", headers=headers).status_code == 401


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


def test_a_key_for_an_unknown_directory_is_refused(tmp_path):
    result = run_cli(tmp_path / "data", "key", "create", "--directory", "Nope", "--name", "k")
    assert result.returncode != 0
    assert 'no directory named "Nope"' in result.stderr


def test_the_secret_key_is_generated_once_and_private(tmp_path):
    data_dir = tmp_path / "data"
    first = create_app({"DATA_DIR": str(data_dir)}).config["SECRET_KEY"]
    second = create_app({"DATA_DIR": str(data_dir)}).config["SECRET_KEY"]
    assert first == second and len(first) == 64
    mode = stat.S_IMODE(os.stat(data_dir / "secret_key").st_mode)
    assert mode == 0o600
