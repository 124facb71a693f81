"""``RequestScopeMiddleware`` in a real project: a web request's ``X-Request-ID`` and remaining
time (``APPD_REQUEST_DEADLINE``) travel with the appd calls its view makes, to the service and
its log records; sync and async views alike."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import descendants, kill_pids, wait_for

pytest.importorskip("django")

from django_project import DjangoProject, all_ready, make_project

VIEWS = """
import appd
from django.http import JsonResponse

from appd.contrib.django import service_client


def scope(request):
    left, rid = service_client("device").call("scope", request.GET.get("note", ""))
    return JsonResponse({"left": left, "rid": rid, "attr": request.appd_request_id})


async def local(request):
    return JsonResponse({"left": appd.time_remaining(), "rid": appd.current_request_id()})
"""

URLS = """
from django.urls import path

from devices import views

urlpatterns = [path("scope", views.scope), path("local", views.local)]
"""

SETTINGS = """
MIDDLEWARE.insert(0, "appd.contrib.django.middleware.RequestScopeMiddleware")
APPD_REQUEST_DEADLINE = 4
ALLOWED_HOSTS = ["testserver"]
"""

#: Run by ``manage.py shell -c``: one JSON line per request (status, header, body).
REQUESTS = """
import asyncio, json
from django.test import AsyncClient, Client

client = Client()
for headers in [{"X-Request-ID": "web-7f3a"}, {}, {"X-Request-ID": "bad id\\twith space"}]:
    r = client.get("/scope", {"note": "note-" + headers.get("X-Request-ID", "none")},
                   headers=headers)
    print(json.dumps([r.status_code, r.headers.get("X-Request-ID"), r.json()]))
r = asyncio.run(AsyncClient().get("/local", headers={"X-Request-ID": "async-1"}))
print(json.dumps([r.status_code, r.headers.get("X-Request-ID"), r.json()]))
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[DjangoProject]:
    before = set(descendants())
    site = make_project(tmp_path / "site")
    site.write("devices/views.py", VIEWS)
    site.write("mysite/urls.py", URLS)
    site.add_settings(SETTINGS)
    yield site
    kill_pids(set(descendants()) - before)


def test_request_id_and_remaining_time_reach_the_service(project: DjangoProject) -> None:
    started = project.manage("appd", "start", "--timeout", "30")
    assert started.returncode == 0, started.stderr
    try:
        wait_for(lambda: all_ready(project.status()), message="appd ready")
        done = project.manage("shell", "-c", REQUESTS)
        assert done.returncode == 0, done.stderr
        given, generated, refused, in_async = (
            json.loads(line) for line in done.stdout.strip().splitlines()[-4:]
        )

        code, header, body = given
        assert code == 200 and header == "web-7f3a"
        assert body["rid"] == body["attr"] == "web-7f3a"  # the service saw the web request's id
        assert 3.0 < body["left"] <= 4.0  # and what was left of APPD_REQUEST_DEADLINE

        code, header, body = generated
        assert code == 200 and re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", header)
        assert body["rid"] == header

        code, header, body = refused  # not a plain token: replaced, never logged as given
        assert code == 200 and header != "bad id\twith space" and body["rid"] == header

        code, header, body = in_async
        assert code == 200 and header == "async-1"
        assert body["rid"] == "async-1" and 3.0 < body["left"] <= 4.0

        def logged() -> list[dict[str, object]] | None:
            log = project.root / "run" / "appd.log"
            records = [json.loads(line) for line in log.read_text().splitlines()
                       if "note-web-7f3a" in line]
            return records or None

        records = wait_for(logged, timeout=10, message="the handler's record")
        assert [r["request_id"] for r in records] == ["web-7f3a"]
    finally:
        project.manage("appd", "stop")
