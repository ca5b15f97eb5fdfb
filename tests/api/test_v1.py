"""REST API v1 end to end through the node app, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient

from adapters.sql.migrate import upgrade
from api.v1 import PREFIX, api_endpoints
from core.clock import FakeClock
from core.settings import load_settings
from napalmsky.composition import API, build_app

FAST = {"NAPALMSKY_BCRYPT_ROUNDS": "4", "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "100000",
        "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "100000", "NAPALMSKY_RATE_LOGIN_PER_HOUR": "100000",
        "NAPALMSKY_ROLES": "api"}
PASSWORD = "correct horse battery staple"


@dataclass
class Api:
    client: TestClient
    clock: FakeClock

    async def call(self, method: str, path: str, token: str | None = None,
                   json: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        resp = await self.client.request(method, PREFIX + path, json=json, headers=headers, **kw)
        body = await resp.json() if resp.content_type == "application/json" else await resp.read()
        return resp.status, body

    async def guest(self, name: str = "Ada") -> tuple[str, dict[str, Any]]:
        status, body = await self.call("POST", "/auth/guest", json={"name": name,
                                                                   "gender": "female"})
        assert status == 201, body
        return body["token"], body["user"]

    async def register(self, email: str | None = None) -> tuple[str, dict[str, Any]]:
        email = email or f"{uuid.uuid4().hex[:10]}@example.com"
        status, body = await self.call("POST", "/auth/register", json={
            "email": email, "password": PASSWORD, "name": "Bo", "gender": "male"})
        assert status == 201, body
        return body["token"], body["user"]


_migrated: set[str] = set()


async def make_api(aiohttp_client: AiohttpClient, tmp_path: Path, extra: dict[str, str],
                   database_url: str | None = None) -> Api:
    env = {"NAPALMSKY_DATA_DIR": str(tmp_path), **FAST, **extra}
    if database_url:
        env["DATABASE_URL"] = database_url
    settings = load_settings(env)
    if settings.database_url not in _migrated:
        await asyncio.to_thread(upgrade, settings.database_url)
        if database_url:
            _migrated.add(settings.database_url)
    clock = FakeClock(start=time.time())
    client = await aiohttp_client(build_app(settings, clock=clock))
    return Api(client, clock)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None for the embedded SQLite; the session's PostgreSQL database otherwise."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_database").url)
    return None


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, tmp_path: Path,
              database_url: str | None) -> AsyncIterator[Api]:
    yield await make_api(aiohttp_client, tmp_path, {}, database_url)


def error(body: Any) -> str:
    return str(body["error"]["code"])


# ---- sign-up and sign-in ----


async def test_guest_sign_up(api: Api) -> None:
    token, user = await api.guest("  Ada   Lovelace ")
    assert len(token) >= 40
    assert user["name"] == "Ada Lovelace" and user["accountType"] == "guest"
    assert user["email"] is None and user["isAdmin"] is False
    assert "passwordHash" not in user and "password_hash" not in user
    status, me = await api.call("GET", "/me", token)
    assert status == 200 and me["id"] == user["id"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "invalid_argument"),
        ({"name": "Ada"}, 400, "invalid_argument"),
        ({"name": "Ada", "gender": "robot"}, 400, "invalid_argument"),
        ({"name": "x" * 51, "gender": "female"}, 400, "invalid_argument"),
        ({"name": "   ", "gender": "female"}, 400, "invalid_argument"),
        ({"name": "Ada", "gender": "female", "admin": True}, 400, "invalid_argument"),
        ([1, 2], 400, "invalid_argument"),
    ],
)
async def test_guest_bad_input(api: Api, body: Any, status: int, code: str) -> None:
    kwargs: dict[str, Any] = ({"data": body, "headers": {"Content-Type": "application/json"}}
                              if isinstance(body, str) else {"json": body})
    got, reply = await api.call("POST", "/auth/guest", **kwargs)
    assert (got, error(reply)) == (status, code)
    assert "Traceback" not in str(reply)


async def test_wrong_content_type(api: Api) -> None:
    status, body = await api.call("POST", "/auth/guest", data=b"name=Ada",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, error(body)) == (415, "unsupported_media_type")


async def test_oversized_json_body(api: Api) -> None:
    status, body = await api.call("POST", "/auth/guest",
                                  data=io.BytesIO(b"{" + b" " * (2 << 20) + b"}"),
                                  headers={"Content-Type": "application/json"})
    assert (status, error(body)) == (413, "payload_too_large")


async def test_register_and_login(api: Api) -> None:
    email = f"{uuid.uuid4().hex[:8]}@Example.COM"
    token, user = await api.register(email)
    assert user["email"] == email.lower() and user["accountType"] == "permanent"
    status, body = await api.call("POST", "/auth/login", json={"email": email.upper(),
                                                              "password": PASSWORD})
    assert status == 200 and body["user"]["id"] == user["id"] and body["token"] != token


async def test_taken_email_is_already_exists(api: Api) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    await api.register(email)
    status, body = await api.call("POST", "/auth/register", json={
        "email": email.upper(), "password": PASSWORD, "name": "X", "gender": "male"})
    assert (status, error(body)) == (409, "already_exists")


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-email", PASSWORD, "email is not a valid address"),
        ("a@example.com", "short", "password must be at least 10 characters"),
        ("a@example.com", "password123", "password is too common"),
        ("a@example.com", "Password123!", "password is too common"),
        ("a@example.com", "é" * 40, "password must be at most 72 bytes"),
    ],
)
async def test_register_refuses_bad_credentials(api: Api, email: str, password: str,
                                                message: str) -> None:
    status, body = await api.call("POST", "/auth/register", json={
        "email": email, "password": password, "name": "X", "gender": "male"})
    assert status == 400 and body["error"] == {"code": "invalid_argument", "message": message}


async def test_failed_login_never_says_whether_the_email_exists(api: Api) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    await api.register(email)
    wrong = await api.call("POST", "/auth/login", json={"email": email, "password": "nope" * 3})
    unknown = await api.call("POST", "/auth/login",
                             json={"email": "nobody-" + email, "password": "nope" * 3})
    assert wrong == unknown == (401, {"error": {"code": "unauthenticated",
                                                "message": "invalid email or password"}})


async def test_failed_logins_cost_one_full_bcrypt_whether_or_not_the_email_exists(
        aiohttp_client: AiohttpClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No timing difference to enumerate accounts with: an unknown email costs one bcrypt
    operation at the configured cost, like a wrong password (timings themselves belong to
    benchmarks, so the test counts the work)."""
    import bcrypt

    from adapters import passwords

    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_BCRYPT_ROUNDS": "5"})
    costs: list[int] = []
    checkpw, hashpw = bcrypt.checkpw, bcrypt.hashpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        result = checkpw(password, hashed)  # raises on a malformed hash: no work done
        costs.append(int(hashed.split(b"$")[2]))
        return result

    def counting_hashpw(password: bytes, salt: bytes) -> bytes:
        costs.append(int(salt.split(b"$")[2]))
        return hashpw(password, salt)

    email = f"{uuid.uuid4().hex[:8]}@example.com"
    await api.register(email)
    monkeypatch.setattr(passwords.bcrypt, "checkpw", counting_checkpw)
    monkeypatch.setattr(passwords.bcrypt, "hashpw", counting_hashpw)
    for attempt in (email, "nobody-" + email, "nobody-" + email, "not an email", email):
        costs.clear()
        status, _ = await api.call("POST", "/auth/login",
                                   json={"email": attempt, "password": "nope" * 3})
        assert status == 401
        assert costs == [5], (attempt, costs)


async def test_upgrade_keeps_the_id_and_rotates_the_token(api: Api) -> None:
    token, user = await api.guest()
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    status, body = await api.call("POST", "/auth/upgrade", token,
                                  json={"email": email, "password": PASSWORD})
    assert status == 200
    assert body["user"]["id"] == user["id"] and body["user"]["accountType"] == "permanent"
    assert (await api.call("GET", "/me", token))[0] == 401  # the old token is gone
    assert (await api.call("GET", "/me", body["token"]))[0] == 200
    again = await api.call("POST", "/auth/upgrade", body["token"],
                           json={"email": "x" + email, "password": PASSWORD})
    assert again[0] == 400
    login = await api.call("POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert login[0] == 200 and login[1]["user"]["id"] == user["id"]


async def test_upgrade_to_a_taken_email(api: Api) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    await api.register(email)
    token, _ = await api.guest()
    status, body = await api.call("POST", "/auth/upgrade", token,
                                  json={"email": email, "password": PASSWORD})
    assert (status, error(body)) == (409, "already_exists")
    assert (await api.call("GET", "/me", token))[0] == 200  # nothing changed


async def test_logout_and_logout_all(api: Api) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    first, _ = await api.register(email)
    creds = {"email": email, "password": PASSWORD}
    second = (await api.call("POST", "/auth/login", json=creds))[1]["token"]
    third = (await api.call("POST", "/auth/login", json=creds))[1]["token"]
    other, _ = await api.guest("Other")
    assert (await api.call("POST", "/auth/logout", first))[0] == 204
    assert (await api.call("GET", "/me", first))[0] == 401
    assert (await api.call("GET", "/me", second))[0] == 200
    assert (await api.call("POST", "/auth/logout-all", second))[0] == 204
    assert (await api.call("GET", "/me", second))[0] == 401
    assert (await api.call("GET", "/me", third))[0] == 401
    assert (await api.call("GET", "/me", other))[0] == 200


async def test_sessions_expire(api: Api) -> None:
    token, _ = await api.guest()
    api.clock.advance(7 * 86400 - 60)
    assert (await api.call("GET", "/me", token))[0] == 200
    api.clock.advance(120)
    status, body = await api.call("GET", "/me", token)
    assert (status, error(body)) == (401, "unauthenticated")


# ---- profiles ----


async def test_profile_patch_and_socials(api: Api) -> None:
    token, _ = await api.guest()
    status, me = await api.call("PATCH", "/me", token, json={
        "name": "Ada L", "gender": "nonbinary",
        "socials": {"instagram": "@ada.l", "website": "https://ada.example.com/me"}})
    assert status == 200
    assert (me["name"], me["gender"]) == ("Ada L", "nonbinary")
    assert me["socials"] == {"instagram": "@ada.l", "website": "https://ada.example.com/me"}
    for socials in ({"website": "http://ada.example.com"}, {"myspace": "ada"},
                    {"instagram": "bad handle!"}, {"x": "https://" + "a" * 300}):
        status, body = await api.call("PATCH", "/me", token, json={"socials": socials})
        assert (status, error(body)) == (400, "invalid_argument"), socials
    assert (await api.call("GET", "/me", token))[1]["socials"] == me["socials"]


async def test_public_profile_shows_public_fields_only(api: Api) -> None:
    token, _ = await api.guest()
    _, other = await api.register()
    status, body = await api.call("GET", f"/users/{other['id']}", token)
    assert status == 200
    assert set(body) == {"id", "name", "gender", "selfieUrl", "videoUrl", "posterUrl", "socials"}
    for path in (f"/users/{uuid.uuid4()}", "/users/not-a-uuid"):
        status, body = await api.call("GET", path, token)
        assert (status, error(body)) == (404, "not_found")


async def test_my_metrics(api: Api) -> None:
    from core.ids import RoomId, UserId
    from core.store import CallSummary

    token, user = await api.guest()
    status, body = await api.call("GET", "/me/metrics", token)
    assert status == 200 and body == {"timerTotalSeconds": 0, "sessionCount": 0,
                                      "lastSessions": []}
    store = api.client.app[API].store
    partner = (await api.register())[1]
    await store.users.record_call(UserId(user["id"]), CallSummary(
        UserId(partner["id"]), "Bo", RoomId(str(uuid.uuid4())), 95,
        (await store.users.get(UserId(user["id"]))).created_at))  # type: ignore[union-attr]
    body = (await api.call("GET", "/me/metrics", token))[1]
    assert body["timerTotalSeconds"] == 95 and body["sessionCount"] == 1
    assert body["lastSessions"][0]["partnerName"] == "Bo"


# ---- selfies ----


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_selfie_upload_and_signed_url(api: Api) -> None:
    token, user = await api.guest()
    status, body = await api.call("PUT", "/me/selfie", token, data=png(),
                                  headers={"Content-Type": "image/png"})
    assert status == 200, body
    url = body["url"]
    assert "/blobs/selfies/" in url and "sig=" in url and "expires=" in url
    fetched = await api.client.get(url[url.index("/blobs/"):])
    assert fetched.status == 200 and fetched.headers["Content-Type"] == "image/jpeg"
    assert (await fetched.read())[:2] == b"\xff\xd8"
    me = (await api.call("GET", "/me", token))[1]
    assert me["selfieUrl"] and "/blobs/selfies/" in me["selfieUrl"]
    public = (await api.call("GET", f"/users/{user['id']}", token))[1]
    assert public["selfieUrl"]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", 415, "unsupported_media_type"),
        (b"", 415, "unsupported_media_type"),
        (png()[: len(png()) // 2], 400, "invalid_argument"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024 + 10), 413, "payload_too_large"),
    ],
)
async def test_bad_selfies_store_nothing(api: Api, data: bytes, status: int, code: str) -> None:
    token, user = await api.guest()
    got, body = await api.call("PUT", "/me/selfie", token, data=io.BytesIO(data),
                               headers={"Content-Type": "image/jpeg"})
    assert (got, error(body)) == (status, code)
    me = (await api.call("GET", "/me", token))[1]
    assert me["selfieUrl"] is None
    blob_root: Path = api.client.app[API].blobs.root  # type: ignore[attr-defined]
    assert not list(blob_root.glob(f"selfies/{user['id']}/*"))


async def test_an_oversized_chunked_selfie_is_cut_off(api: Api) -> None:
    token, _ = await api.guest()

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(200):  # 12.8 MB without a Content-Length
            yield b"\x00" * 65536

    got, body = await api.call("PUT", "/me/selfie", token, data=endless(),
                               headers={"Content-Type": "image/png"})
    assert (got, error(body)) == (413, "payload_too_large")


# ---- OpenAPI ----


async def test_openapi_describes_every_route(api: Api) -> None:
    status, doc = await api.call("GET", "/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    endpoints = api_endpoints(lambda: api.client.app[API])
    for endpoint in endpoints:
        operation = doc["paths"][endpoint.path][endpoint.method.lower()]
        assert operation["summary"]
        assert ("security" in operation) == (endpoint.auth != "none"), endpoint.path
        if endpoint.auth != "none":
            assert "401" in operation["responses"]
        if endpoint.request is not None:
            schema_ref = operation["requestBody"]["content"]["application/json"]["schema"]
            name = schema_ref["$ref"].rsplit("/", 1)[1]
            assert name in doc["components"]["schemas"]
    register = doc["paths"][f"{PREFIX}/auth/register"]["post"]
    assert "already_exists" in register["responses"]["409"]["description"]
    guest = doc["components"]["schemas"]["GuestRequest"]
    assert set(guest["required"]) == {"name", "gender"}
    assert guest["additionalProperties"] is False


# What an outside audit and schemathesis found (tests/api/test_openapi_schemathesis.py runs
# schemathesis over the whole document against a real server).


async def test_openapi_documents_every_status_an_operation_answers(api: Api) -> None:
    """Every operation with a JSON body answers 415 (not JSON) and 413 (over 1 MB), every one
    answers 400 (unstorable text in a path or query), 429 with its Retry-After."""
    doc = (await api.call("GET", "/openapi.json"))[1]
    json_bodies = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "429", "503"} <= set(responses), (method, path)
            assert "Retry-After" in responses["429"]["headers"]
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                json_bodies += 1
                assert {"413", "415"} <= set(responses), (method, path)
    assert json_bodies == 6
    token, _ = await api.guest()
    for method, path, body in (("POST", "/auth/guest", b"name=Ada"),
                               ("POST", "/auth/login", b"x"),
                               ("POST", "/auth/upgrade", b"x"), ("POST", "/auth/totp", b"x"),
                               ("POST", "/auth/register", b"x"), ("PATCH", "/me", b"x")):
        status, answer = await api.call(method, path, token, data=body,
                                        headers={"Content-Type": "text/plain"})
        assert (status, error(answer)) == (415, "unsupported_media_type"), path
        assert "415" in doc["paths"][PREFIX + path][method.lower()]["responses"]


async def test_openapi_leaves_out_the_websocket(aiohttp_client: AiohttpClient, tmp_path: Path,
                                                database_url: str | None) -> None:
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_ROLES": "api,signaling"},
                         database_url)
    doc = (await api.call("GET", "/openapi.json"))[1]
    assert "/ws" not in doc["paths"]
    assert all(path.startswith(f"{PREFIX}/") for path in doc["paths"])
    assert "/ws" in doc["info"]["description"] and "docs/protocol.md" in doc["info"]["description"]
    assert f"{PREFIX}/deck" in doc["paths"] and f"{PREFIX}/config" in doc["paths"]


@pytest.fixture
async def deck_api(aiohttp_client: AiohttpClient, tmp_path: Path,
                   database_url: str | None) -> Api:
    return await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_ROLES": "api,signaling"},
                          database_url)


async def test_openapi_declares_the_decks_query_and_its_400(deck_api: Api) -> None:
    doc = (await deck_api.call("GET", "/openapi.json"))[1]
    deck = doc["paths"][f"{PREFIX}/deck"]["get"]
    params = {p["name"]: p for p in deck["parameters"]}
    assert params["limit"]["in"] == "query" and params["limit"]["required"] is False
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 50,
                                         "default": 20}
    assert params["cursor"]["schema"]["maxLength"] == 36
    assert "400" in deck["responses"]
    user = doc["paths"][f"{PREFIX}/users/{{user_id}}"]["get"]
    assert user["parameters"] == [{
        "name": "user_id", "in": "path", "required": True,
        "schema": {"type": "string", "format": "uuid"},
        "description": "A user's id; any other text finds no one (404)."}]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=abc", "limit must be an integer"),
        ("limit=%205", "limit must be an integer"),  # int() reads " 5"
        ("limit=5_0", "limit must be an integer"),  # and "5_0" as 50
        ("limit=%D9%A5", "limit must be an integer"),  # and an Arabic-Indic five
        ("limit=5.0", "limit must be an integer"),
        ("limit=0", "limit must be between 1 and 50"),
        ("limit=51", "limit must be between 1 and 50"),
        ("limit=5&limit=6", "limit must be given once"),
        ("cursor=" + "a" * 37, "cursor must be a nextCursor from a previous page"),
        ("cursor=Ada", "cursor must be a nextCursor from a previous page"),
    ],
)
async def test_the_deck_refuses_what_its_document_forbids(deck_api: Api, query: str,
                                                          message: str) -> None:
    token, _ = await deck_api.guest()
    status, body = await deck_api.call("GET", f"/deck?{query}", token)
    assert status == 400 and body["error"] == {"code": "invalid_argument", "message": message}


async def test_the_deck_accepts_what_its_document_allows(deck_api: Api) -> None:
    token, _ = await deck_api.guest()
    for query in ("", "limit=1", "limit=50", "limit=%2B5", "limit=05", "cursor=",
                  f"cursor={uuid.uuid4()}&limit=20", "other=ignored"):
        status, body = await deck_api.call("GET", f"/deck?{query}", token)
        assert status == 200 and body["people"] == [], (query, body)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        # names: printable text on one line (what the document's pattern says)
        ("/auth/guest", {"name": "Ada\tLovelace", "gender": "female"},
         "name must be printable text on one line, not blank"),
        ("/auth/guest", {"name": "Ada\nLovelace", "gender": "female"},
         "name must be printable text on one line, not blank"),
        ("/auth/guest", {"name": "Ada\u200bLovelace", "gender": "female"},  # zero-width space
         "name must be printable text on one line, not blank"),
        ("/auth/guest", {"name": "Ada\u0085", "gender": "female"},
         "name must be printable text on one line, not blank"),
        ("/auth/guest", {"name": "", "gender": "female"}, "name must not be empty"),
        ("/auth/guest", {"name": "   " + "a" * 48, "gender": "female"},  # 51 as sent
         "name must be at most 50 characters"),
        # emails: the document's pattern
        ("/auth/register", {"email": "ada@example.com\n", "password": PASSWORD, "name": "Ada",
                            "gender": "female"}, "email is not a valid address"),
        ("/auth/register", {"email": " ada@example.com", "password": PASSWORD, "name": "Ada",
                            "gender": "female"}, "email is not a valid address"),
        ("/auth/register", {"email": "ad\u00e9@example.com", "password": PASSWORD,
                            "name": "Ada", "gender": "female"}, "email is not a valid address"),
        ("/auth/register", {"email": "ada@\u212aelvin.com", "password": PASSWORD,
                            "name": "Ada", "gender": "female"}, "email is not a valid address"),
        # passwords: 72 bytes at most, on sign-in too (a longer one cannot exist)
        ("/auth/login", {"email": "nobody@example.com", "password": "x" * 73},
         "password must be at most 72 bytes"),
        ("/auth/login", {"email": "nobody@example.com", "password": "\u00e9" * 37},
         "password must be at most 72 bytes"),
        # second-factor codes: six ASCII digits
        ("/auth/totp", {"code": "\u0661\u0662\u0663\u0664\u0665\u0666"},
         "code must be 6 digits"),
        # socials: the document's platforms and links
        ("/me", {"socials": {"instagram": "ada\n"}},
         "socials.instagram must be a handle or an https URL of at most 200 characters"),
        ("/me", {"socials": {"website": "https://ada.example.com/caf\u00e9"}},
         "socials.website must be a handle or an https URL of at most 200 characters"),
        ("/me", {"socials": {"website": "https://ada.example.com/\u0001"}},
         "socials.website must be a handle or an https URL of at most 200 characters"),
        ("/me", {"socials": {"myspace": "ada"}},
         "socials: unknown platform 'myspace'; one of instagram, tiktok, x, snapchat, "
         "linkedin, website"),
    ],
)
async def test_requests_the_document_forbids_are_a_400_naming_the_field(
        api: Api, path: str, body: dict[str, Any], message: str) -> None:
    token, _ = await api.guest()
    method = "PATCH" if path == "/me" else "POST"
    status, answer = await api.call(method, path, token, json=body)
    assert status == 400, answer
    assert answer["error"] == {"code": "invalid_argument", "message": message}


async def test_a_first_failed_login_with_a_long_password_is_no_500(api: Api) -> None:
    """The first failed login of a node hashed the attempted password (for equal timing), and
    bcrypt refuses more than 72 bytes: an unknown email with a long password was a 500."""
    for _ in range(2):
        status, answer = await api.call("POST", "/auth/login", json={
            "email": f"nobody-{uuid.uuid4().hex[:6]}@example.com", "password": "p" * 100})
        assert (status, error(answer)) == (400, "invalid_argument")
    status, _ = await api.call("POST", "/auth/login", json={
        "email": "nobody@example.com", "password": "\u00e9" * 36})  # 72 bytes: a real try
    assert status == 401


async def test_requests_the_document_allows_are_accepted(api: Api) -> None:
    token, _ = await api.guest()
    for name in ("Zo\u00eb", "  Ada   Lovelace ", "\u0905\u0928\u0941", "\u674e\u5c0f\u9f99",
                 "O'Brien-Smith \u2713", " " * 49 + "A"):
        status, me = await api.call("PATCH", "/me", token, json={"name": name})
        assert status == 200, (name, me)
        assert me["name"] == " ".join(name.split())
    status, me = await api.call("PATCH", "/me", token, json={"socials": {
        "x": "@ada_l", "website": "https://ada.example.com:8443/a/b?c=d#e"}})
    assert status == 200, me
    status, body = await api.call("POST", "/auth/upgrade", token, json={
        "email": f"a.b+c-{uuid.uuid4().hex[:6]}@Sub.Example-Site.COM",
        "password": "\u00e9" * 36})  # 72 bytes
    assert status == 200, body


async def test_a_selfie_is_sent_as_an_image_type(api: Api) -> None:
    """The document lists image/jpeg, image/png and image/webp: a real image under another
    type is refused, not sniffed and stored."""
    token, _ = await api.guest()
    for content_type in ("text/plain", "application/octet-stream", "multipart/form-data"):
        status, body = await api.call("PUT", "/me/selfie", token, data=png(),
                                      headers={"Content-Type": content_type})
        assert (status, error(body)) == (415, "unsupported_media_type"), content_type
    assert (await api.call("GET", "/me", token))[1]["selfieUrl"] is None


# ---- authorization matrix ----

Caller = Callable[[str | None], Awaitable[tuple[int, Any]]]


def protected(api: Api) -> list[tuple[str, str]]:
    endpoints = api_endpoints(lambda: api.client.app[API])
    return [(e.method, e.path.removeprefix(PREFIX).replace("{user_id}", str(uuid.uuid4())))
            for e in endpoints if e.auth != "none"]


async def test_every_protected_route_refuses_bad_tokens(api: Api) -> None:
    revoked, _ = await api.guest()
    await api.call("POST", "/auth/logout", revoked)
    expiring, _ = await api.guest()
    api.clock.advance(8 * 86400)
    routes = protected(api)
    assert len(routes) >= 9
    for method, path in routes:
        for token, headers in ((None, {}), ("garbage", {}), (revoked, {}), (expiring, {}),
                               (None, {"Authorization": "Basic dXNlcjpwYXNz"})):
            status, body = await api.call(method, path, token, json={}, headers=headers)
            assert (status, error(body)) == (401, "unauthenticated"), (method, path, token)


async def test_admin_routes_need_an_admin_with_a_second_factor(api: Api) -> None:
    accounts = api.client.app[API].accounts
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    admin, uri = await accounts.create_admin(email, "Root", PASSWORD)
    assert uri.startswith("otpauth://totp/") and "Napalm%20Sky" in uri
    _, target = await api.register()
    path = f"/admin/users/{target['id']}"

    user_token, _ = await api.guest()
    status, body = await api.call("GET", path, user_token)
    assert (status, body["error"]["message"]) == (403, "admins only")
    status, body = await api.call("POST", "/auth/totp", user_token, json={"code": "123456"})
    assert (status, error(body)) == (403, "permission_denied")

    token = (await api.call("POST", "/auth/login",
                            json={"email": email, "password": PASSWORD}))[1]["token"]
    status, body = await api.call("GET", path, token)
    assert status == 403 and "second factor" in body["error"]["message"]
    status, body = await api.call("POST", "/auth/totp", token, json={"code": "000000"})
    assert (status, error(body)) == (401, "unauthenticated")

    assert admin.totp_secret is not None
    code = pyotp.TOTP(admin.totp_secret).at(int(api.clock.time()))
    status, body = await api.call("POST", "/auth/totp", token, json={"code": code})
    assert status == 200 and body["token"] != token
    assert (await api.call("GET", "/me", token))[0] == 401  # rotated on privilege change
    status, body = await api.call("GET", path, body["token"])
    assert status == 200 and body["id"] == target["id"] and body["banStatus"] == "none"
    status, body = await api.call("GET", f"/admin/users/{uuid.uuid4()}", token)
    assert status == 401


async def test_second_factor_guesses_are_limited_and_codes_used_once(api: Api) -> None:
    """200 wrong codes on one session used to be answered 401 one by one, and one code
    opened two sessions (issue 10, item 3)."""
    from core.accounts import TOTP_ACCOUNT_ATTEMPTS, TOTP_SESSION_ATTEMPTS, TOTP_WINDOW

    accounts = api.client.app[API].accounts
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    admin, _ = await accounts.create_admin(email, "Root", PASSWORD)
    assert admin.totp_secret is not None
    totp = pyotp.TOTP(admin.totp_secret)

    async def login() -> str:
        status, body = await api.call("POST", "/auth/login",
                                      json={"email": email, "password": PASSWORD})
        assert status == 200, body
        return str(body["token"])

    wrong = f"{(int(totp.at(int(api.clock.time()))) + 500_000) % 1_000_000:06d}"
    first = await login()
    for _ in range(TOTP_SESSION_ATTEMPTS):
        status, body = await api.call("POST", "/auth/totp", first, json={"code": wrong})
        assert (status, error(body)) == (401, "unauthenticated")
    resp = await api.client.post(f"{PREFIX}/auth/totp", json={"code": wrong},
                                 headers={"Authorization": f"Bearer {first}"})
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0
    # the right code is refused too once the session is locked: no guessing past the limit
    right = totp.at(int(api.clock.time()))
    assert (await api.call("POST", "/auth/totp", first, json={"code": right}))[0] == 429
    # the account's own limit holds across new sessions
    others = [await login() for _ in range(2)]
    for n in range(TOTP_ACCOUNT_ATTEMPTS - TOTP_SESSION_ATTEMPTS):  # up to the account's limit
        status, _ = await api.call("POST", "/auth/totp", others[n % 2], json={"code": wrong})
        assert status == 401
    assert (await api.call("POST", "/auth/totp", await login(), json={"code": right}))[0] == 429

    api.clock.advance(TOTP_WINDOW + 1)
    right = totp.at(int(api.clock.time()))
    a, b = await login(), await login()
    status, body = await api.call("POST", "/auth/totp", a, json={"code": right})
    assert status == 200
    status, body = await api.call("POST", "/auth/totp", b, json={"code": right})  # replayed
    assert (status, error(body)) == (401, "unauthenticated")
    assert "already used" in body["error"]["message"]


# ---- rate limits ----


async def test_failed_logins_are_limited_per_address_and_account(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_RATE_LOGIN_PER_HOUR": "5"})
    creds = {"email": "nobody@example.com", "password": "wrong password"}
    for i in range(5):  # X-Forwarded-For from an untrusted peer changes nothing
        status, _ = await api.call("POST", "/auth/login", json=creds,
                                   headers={"X-Forwarded-For": f"203.0.113.{i}"})
        assert status == 401
    resp = await api.client.post(f"{PREFIX}/auth/login", json=creds)
    assert resp.status == 429
    body = await resp.json()
    assert body["error"]["code"] == "rate_limited"
    assert "Try again in about 12 minutes" in body["error"]["message"]  # one failure back
    assert 700 <= int(resp.headers["Retry-After"]) <= 720
    api.clock.advance(721)
    assert (await api.call("POST", "/auth/login", json=creds))[0] == 401
    assert (await api.call("POST", "/auth/login", json=creds))[0] == 429


async def test_a_shared_address_is_not_locked_out_by_its_users(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A café: forty people sign in from one address within the hour, a few mistyping once;
    none is refused. Another account failing from there does not spend theirs."""
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_RATE_LOGIN_PER_HOUR": "5"})
    people = [{"email": f"guest{i}@example.com", "password": f"password number {i}"}
              for i in range(40)]
    for person in people:
        status, _ = await api.call("POST", "/auth/register",
                                   json={**person, "name": "Guest", "gender": "female"},
                                   headers={"X-Forwarded-For": "198.51.100.9"})
        assert status == 201
    for i, person in enumerate(people):
        if i % 4 == 0:  # a typo first, then the right password
            wrong = {**person, "password": "not my password"}
            assert (await api.call("POST", "/auth/login", json=wrong))[0] == 401
        assert (await api.call("POST", "/auth/login", json=person))[0] == 200
        api.clock.advance(60)
    guesser = {"email": "victim@example.com", "password": "guess"}
    for _ in range(5):
        assert (await api.call("POST", "/auth/login", json=guesser))[0] == 401
    assert (await api.call("POST", "/auth/login", json=guesser))[0] == 429
    assert (await api.call("POST", "/auth/login", json=people[1]))[0] == 200


async def test_one_address_guessing_many_accounts_is_limited(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_RATE_LOGIN_PER_HOUR": "2"})
    statuses = [(await api.call("POST", "/auth/login",
                                json={"email": f"user{i}@example.com", "password": "guess"}))[0]
                for i in range(21)]
    assert statuses == [401] * 20 + [429]  # 10 x 2 failures over all accounts


async def test_trusted_proxy_forwarded_for_separates_clients(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_RATE_LOGIN_PER_HOUR": "2",
                                                    "NAPALMSKY_TRUSTED_PROXIES": "127.0.0.1"})
    creds = {"email": "nobody@example.com", "password": "wrong password"}
    for client_addr in ("198.51.100.1", "198.51.100.2"):
        headers = {"X-Forwarded-For": f"10.9.9.9, {client_addr}"}
        for _ in range(2):
            assert (await api.call("POST", "/auth/login", json=creds, headers=headers))[0] == 401
        assert (await api.call("POST", "/auth/login", json=creds, headers=headers))[0] == 429


async def test_rate_limit_holds_across_two_nodes_sharing_redis(
    aiohttp_client: AiohttpClient, tmp_path: Path, redis_url: str
) -> None:
    shared = {"REDIS_URL": redis_url, "NAPALMSKY_REDIS_PREFIX": f"test-{uuid.uuid4().hex}:",
              "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "4"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    node_a = await make_api(aiohttp_client, tmp_path / "a", shared)
    node_b = await make_api(aiohttp_client, tmp_path / "b", shared)
    await node_a.guest()
    await node_b.guest()
    await node_a.guest()
    await node_b.guest()
    status, body = await node_a.call("POST", "/auth/guest", json={"name": "x",
                                                                  "gender": "male"})
    assert (status, error(body)) == (429, "challenge_required")  # (tests/api/test_signup_limits)
    status, _ = await node_b.call("POST", "/auth/guest", json={"name": "x", "gender": "male"})
    assert status == 429


async def test_per_token_budget(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_RATE_TOKEN_PER_MINUTE": "3"})
    token, _ = await api.guest()
    other, _ = await api.guest("Other")
    for _ in range(3):
        assert (await api.call("GET", "/me", token))[0] == 200
    assert (await api.call("GET", "/me", token))[0] == 429
    assert (await api.call("GET", "/me", other))[0] == 200
    api.clock.advance(61)
    assert (await api.call("GET", "/me", token))[0] == 200


# ---- text the database cannot store (issue 10, item 2) ----


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/auth/login", {"email": "a\u0000@example.com", "password": "x" * 12},
         "body.email"),
        ("POST", "/auth/register", {"email": "b@example.com", "password": PASSWORD,
                                    "name": "Bo\u0000", "gender": "male"}, "body.name"),
        ("POST", "/auth/guest", {"name": "Ada\ud800", "gender": "female"}, "body.name"),
        ("PATCH", "/me", {"socials": {"instagram": "ada\u0000"}}, "body.socials.instagram"),
        ("PATCH", "/me", {"socials": {"insta\u0000gram": "ada"}}, "body.socials"),
    ],
)
async def test_unstorable_text_is_a_400_naming_the_field(
        api: Api, method: str, path: str, body: dict[str, Any], field: str) -> None:
    token, _ = await api.guest()
    status, answer = await api.call(method, path, token, json=body)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_argument"
    assert answer["error"]["message"].startswith(f"{field}: ")


async def test_unstorable_text_in_paths_and_queries(api: Api) -> None:
    token, _ = await api.guest()
    for path in ("/users/abc%00def", "/me/calls?cursor=%00", "/deck?limit=%00"):
        status, answer = await api.call("GET", path, token)
        assert status == 400, (path, answer)
        assert answer["error"]["code"] == "invalid_argument"
