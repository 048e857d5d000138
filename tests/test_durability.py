"""Acknowledged writes survive SIGKILL of the server; concurrent writers lose nothing."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid

import requests
from tinydb import TinyDB

from schemas import CORE_USER_URN, PATCH_OP_URN
from store import DATABASE_FILE, Store

from .conftest import LiveServer, create_key_with_cli

HEADERS = {"Content-Type": "application/scim+json"}


def new_user_body() -> dict:
    name = f"crash-{uuid.uuid4()}@contoso.example"
    return {"schemas": [CORE_USER_URN], "userName": name, "displayName": "Crash Test"}


def title_patch(value: str) -> dict:
    return {
        "schemas": [PATCH_OP_URN],
        "Operations": [{"op": "Replace", "path": "title", "value": value}],
    }


class Writer(threading.Thread):
    """Creates users and retitles them until the server dies; remembers what got a 2xx."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.session = requests.Session()
        self.session.headers.update({**HEADERS, "Authorization": f"Bearer {token}"})
        self.created: dict[str, str] = {}  # id -> userName
        self.titles: dict[str, str] = {}  # id -> last acknowledged title

    def run(self) -> None:
        try:
            while True:
                response = self.session.post(f"{self.base}/Users", json=new_user_body(), timeout=5)
                if response.status_code != 201:
                    return
                body = response.json()
                self.created[body["id"]] = body["userName"]
                title = f"t-{random.random()}"
                patched = self.session.patch(
                    f"{self.base}/Users/{body['id']}", json=title_patch(title), timeout=5
                )
                if patched.status_code != 200:
                    return
                self.titles[body["id"]] = title
        except requests.RequestException:
            return


def test_sigkill_loses_no_acknowledged_write(tmp_path):
    data_dir = tmp_path / "data"
    token = create_key_with_cli(data_dir)
    server = LiveServer(data_dir)
    acknowledged: dict[str, str] = {}
    titles: dict[str, str] = {}
    for _round in range(4):
        server.start()
        writers = [Writer(f"{server.url}/v2", token) for _ in range(4)]
        for writer in writers:
            writer.start()
        time.sleep(random.uniform(0.3, 1.2))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        server.process = None
        for writer in writers:
            writer.join(timeout=10)
            acknowledged.update(writer.created)
            titles.update(writer.titles)
    assert acknowledged, "no write was acknowledged before the kills"

    store = Store(str(data_dir))
    directory = store.find_directory_by_name("Default")
    for user_id, user_name in acknowledged.items():
        found = store.get_user(directory["id"], user_id)
        assert found is not None and found["userName"] == user_name
        if user_id in titles:
            assert found["title"] == titles[user_id]
    store.close()
    users = TinyDB(str(data_dir / DATABASE_FILE)).table("users")
    assert len(users) >= len(acknowledged)


def test_eight_threads_patching_one_user_keep_every_change(live_server, scim_session):
    base = scim_session.base
    created = scim_session.post(f"{base}/Users", json=new_user_body()).json()
    attributes = ["title", "nickName", "userType", "preferredLanguage", "locale", "timezone"]
    attributes += ["profileUrl", "displayName"]
    errors: list = []

    def patch(attribute: str) -> None:
        session = requests.Session()
        session.headers.update(scim_session.headers)
        for n in range(5):
            operation = {"op": "replace", "path": attribute, "value": f"{attribute[:4]}{n}"}
            body = {"schemas": [PATCH_OP_URN], "Operations": [operation]}
            response = session.patch(f"{base}/Users/{created['id']}", json=body)
            if response.status_code != 200:
                errors.append(response.text)

    threads = [threading.Thread(target=patch, args=(a,)) for a in attributes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = scim_session.get(f"{base}/Users/{created['id']}").json()
    assert {a: final[a] for a in attributes} == {a: f"{a[:4]}4" for a in attributes}
