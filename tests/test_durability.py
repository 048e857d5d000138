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

from schemas import CORE_GROUP_URN, CORE_USER_URN, PATCH_OP_URN
from store import DATABASE_FILE, Store

from .conftest import LiveServer, create_key_with_cli

HEADERS = {"Content-Type": "application/scim+json"}
BULK_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


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


def test_a_thousand_members_added_in_one_patch_survive_sigkill(live_server, scim_session):
    """Entra's shape ({"$ref": null, "value": id}); the 204 means the journal line is on disk."""
    base = scim_session.base
    posts = [
        {"method": "POST", "path": "/Users", "bulkId": f"u{n}", "data": new_user_body()}
        for n in range(1000)
    ]
    bulk = {"schemas": [BULK_REQUEST_URN], "Operations": posts}
    results = scim_session.post(f"{base}/Bulk", json=bulk).json()["Operations"]
    user_ids = [result["location"].rsplit("/", 1)[-1] for result in results]
    group = scim_session.post(
        f"{base}/Groups", json={"schemas": [CORE_GROUP_URN], "displayName": "All hands"}
    ).json()
    stranger = str(uuid.uuid4())
    members = [{"$ref": None, "value": user_id} for user_id in [*user_ids, stranger]]
    add = {"op": "Add", "path": "members", "value": members}
    body = {"schemas": [PATCH_OP_URN], "Operations": [add]}
    response = scim_session.patch(f"{base}/Groups/{group['id']}", json=body)
    assert response.status_code == 204, response.text
    os.kill(live_server.process.pid, signal.SIGKILL)
    live_server.process.wait()
    live_server.process = None

    store = Store(str(live_server.data_dir))
    directory = store.find_directory_by_name("Default")
    kept = store.group_members(directory["id"], group["id"])
    assert [user_id for user_id, _name in kept] == user_ids
    version = store.get_group(directory["id"], group["id"])["meta"]["version"]
    assert version == response.headers["ETag"]
    skipped = [e["target"] for e in store.list_audit() if e["action"] == "group.member_skipped"]
    assert skipped == [stranger]
    store.close()
