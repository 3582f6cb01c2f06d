"""Offline tests of the SDK: plain CPython (3.11+) against componentize-py's stub bindings,
with the platform imports replaced by in-memory fakes.

    python3 guest-sdk-py/tests/test_sdk.py

Generates the stub bindings (``componentize-py bindings``) into a temporary directory
first, so it needs componentize-py where build.sh looks for it.
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
ROOT = os.path.dirname(SDK)


def _bindings() -> str:
    tool = os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "nanogrid", "py-guests", "bin", "componentize-py",
    )
    out = tempfile.mkdtemp(prefix="nanogrid-py-stubs.")
    atexit.register(shutil.rmtree, out, True)
    subprocess.run(
        [tool, "-q", "-d", os.path.join(ROOT, "wit"), "-w", "nanogrid:service/nanoservice", "bindings", out],
        check=True,
    )
    return out


sys.path[:0] = [_bindings(), SDK]
sys.dont_write_bytecode = True

from componentize_py_types import Err, Ok  # noqa: E402
from wit_world.imports import barrier as wit_barrier  # noqa: E402
from wit_world.imports import config as wit_config  # noqa: E402
from wit_world.imports import context as wit_context  # noqa: E402
from wit_world.imports import invoke as wit_invoke  # noqa: E402
from wit_world.imports import kv as wit_kv  # noqa: E402
from wit_world.imports import log as wit_log  # noqa: E402
from wit_world.imports import types as wit  # noqa: E402

import nanogrid  # noqa: E402
from nanogrid import (  # noqa: E402
    Error, Internal, Invalid, NotFound, Request, Response, Service, Timeout, Unavailable,
    export, invoke, kv,
)


class FakeKv:
    """An in-memory kv; `contention` CAS calls fail as if another writer got there first."""

    def __init__(self):
        self.data = {}
        self.contention = 0
        self.cas_calls = 0
        self.levels = []
        wit_kv.get = self.get
        wit_kv.set = self.set
        wit_kv.delete = self.delete
        wit_kv.compare_and_swap = self.cas
        wit_kv.list_keys = self.list_keys

    def get(self, key, level):
        self.levels.append(level)
        return self.data.get(key)

    def set(self, key, value, level):
        assert isinstance(value, bytes)
        self.levels.append(level)
        self.data[key] = value

    def delete(self, key, level):
        self.data.pop(key, None)

    def cas(self, key, expected, new):
        self.cas_calls += 1
        if self.contention:
            self.contention -= 1
            # Someone else incremented meanwhile.
            self.data[key] = str(int(self.data.get(key, b"0")) + 1).encode()
            return False
        if self.data.get(key) != expected:
            return False
        self.data[key] = new
        return True

    def list_keys(self, prefix, after, limit):
        if limit > 10_000:
            raise Err(wit.Error_Invalid("limit too large"))
        keys = sorted(k for k in self.data if k.startswith(prefix) and (after is None or k > after))
        return keys[:limit]


class RequestResponse(unittest.TestCase):
    def test_request_helpers(self):
        req = Request.get("/items/7?limit=3&flag&x=y").with_header("Content-Type", "text/plain").with_body("héllo")
        self.assertIsInstance(req, wit.Request)
        self.assertEqual(req.route, "/items/7")
        self.assertEqual(req.query, "limit=3&flag&x=y")
        self.assertEqual(req.query_param("limit"), "3")
        self.assertEqual(req.query_param("flag"), "")
        self.assertIsNone(req.query_param("nope"))
        self.assertEqual(req.query_param("nope", "d"), "d")
        self.assertEqual(req.header("content-type"), "text/plain")
        self.assertEqual(req.text(), "héllo")
        with self.assertRaises(Invalid):
            req.json()
        self.assertIsNone(Request.get("/a").query)
        with self.assertRaises(Invalid):
            Request.post("/", b"\xff").text()

    def test_error_responses_have_the_platform_shape(self):
        resp = Response.from_error(NotFound("no such item"))
        self.assertEqual(resp.status, 404)
        self.assertEqual(resp.json_body(), {"error": {"code": "not-found", "message": "no such item"}})
        self.assertEqual(resp.body, b'{"error":{"code":"not-found","message":"no such item"}}')
        self.assertEqual(Response.from_error(Timeout()).status, 504)
        self.assertEqual(Timeout().message, "the call timed out")
        statuses = {c.code: c.status for c in (NotFound, Unavailable, Timeout, nanogrid.Denied, Invalid, Internal)}
        self.assertEqual(statuses, {"not-found": 404, "unavailable": 503, "timeout": 504, "denied": 403,
                                    "invalid": 400, "internal": 500})

    def test_wit_round_trip(self):
        for err in (NotFound("a"), Unavailable("b"), Timeout(), nanogrid.Denied("d"), Invalid("e"), Internal("f")):
            back = Error.from_wit(err.to_wit())
            self.assertIs(type(back), type(err))
            self.assertEqual(back.message, err.message)

    def test_json_round_trip(self):
        req = Request.post_json("/", {"a": 1, "é": "ü"})
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.body, '{"a":1,"é":"ü"}'.encode())
        self.assertEqual(req.json()["a"], 1)
        resp = Response.json(201, [1, 2])
        self.assertTrue(resp.ok)
        self.assertEqual(resp.header("CONTENT-TYPE"), "application/json")
        with self.assertRaises(Unavailable) as cm:
            Response(500, "boom").raise_for_status("svc")
        self.assertEqual(cm.exception.message, "svc answered 500: boom")


class Kv(unittest.TestCase):
    def setUp(self):
        self.kv = FakeKv()

    def test_increment_retries_on_contention(self):
        self.kv.contention = 3
        self.assertEqual(kv.increment("n", 5), 3 + 5)
        self.assertEqual(self.kv.cas_calls, 4)
        self.assertEqual(self.kv.data["n"], b"8")
        self.assertEqual(kv.increment("n", -10), -2)
        self.assertEqual(kv.get_int("n"), -2)
        self.assertEqual(kv.get_int("absent", 7), 7)

    def test_increment_rejects_non_integers_and_overflow(self):
        for bad in (b"x", b" 1", b"1.5", b"", b"1_0", b"\xff"):
            self.kv.data["n"] = bad
            with self.assertRaises(Invalid):
                kv.increment("n")
        self.kv.data["n"] = b"+4"  # Rust's i64 parser takes a plus sign
        self.assertEqual(kv.increment("n"), 5)
        self.kv.data["n"] = str(2**63 - 1).encode()
        with self.assertRaises(Invalid) as cm:
            kv.increment("n")
        self.assertEqual(cm.exception.message, 'counter "n" would overflow')

    def test_values_levels_and_errors(self):
        kv.set("s", "text")
        self.assertEqual(kv.get("s"), b"text")
        self.assertEqual(kv.get_text("s"), "text")
        kv.set_json("j", {"a": [1]}, consistency="all")
        self.assertEqual(kv.get_json("j"), {"a": [1]})
        self.assertEqual(kv.get_json("nope", {}), {})
        self.assertEqual(self.kv.levels[-1], wit_kv.Consistency.QUORUM)
        kv.get("s", consistency=kv.ONE)
        self.assertEqual(self.kv.levels[-1], wit_kv.Consistency.ONE)
        self.assertIn(wit_kv.Consistency.ALL, self.kv.levels)
        with self.assertRaises(Invalid):
            kv.get("s", consistency="most")
        with self.assertRaises(Internal):
            kv.get_json("s")
        self.assertTrue(kv.compare_and_swap("c", None, "1"))
        self.assertFalse(kv.compare_and_swap("c", None, "2"))
        self.assertTrue(kv.compare_and_swap("c", "1", b"2"))
        kv.delete("c")
        self.assertIsNone(kv.get("c"))
        for i in range(5):
            kv.set(f"p:{i}", "")
        self.assertEqual(list(kv.keys("p:", page=2)), [f"p:{i}" for i in range(5)])
        with self.assertRaises(Invalid) as cm:
            kv.list_keys("", None, 100_000)
        self.assertEqual(cm.exception.message, "limit too large")


class Dispatch(unittest.TestCase):
    def setUp(self):
        FakeKv()
        self.logged = []
        wit_log.log = lambda level, msg: self.logged.append((level, msg))

    def call(self, handler_cls, method="GET", path="/"):
        resp = handler_cls().handle(wit.Request(method, path, [], b""))
        self.assertIsInstance(resp, wit.Response)
        return resp

    def test_service_errors_and_shortcuts(self):
        class App(Service):
            def handle(self, req):
                if req.route == "/missing":
                    raise NotFound("nothing here")
                if req.route == "/boom":
                    return 1 / 0
                if req.route == "/dict":
                    return {"n": kv.increment("n")}
                if req.route == "/str":
                    return "hi"
                return Response.text(200, req.method)

        Handler = export(App)
        self.assertEqual(self.call(Handler, "PUT").body, b"PUT")
        resp = self.call(Handler, path="/missing")
        self.assertEqual((resp.status, json.loads(resp.body)["error"]["code"]), (404, "not-found"))
        resp = self.call(Handler, path="/boom")
        self.assertEqual(resp.status, 500)
        self.assertEqual(json.loads(resp.body)["error"]["message"], "unhandled ZeroDivisionError: division by zero")
        self.assertRegex(self.logged[-1][1], r"^unhandled ZeroDivisionError: division by zero \(at .*test_sdk.py:\d+ in handle\)$")
        self.assertEqual(json.loads(self.call(Handler, path="/dict").body), {"n": 1})
        self.assertEqual(self.call(Handler, path="/str").body, b"hi")

    def test_uncaught_can_trap(self):
        class App(Service):
            catch_exceptions = False

            def handle(self, req):
                raise KeyError("x")

        with self.assertRaises(KeyError):
            export(App)().handle(wit.Request("GET", "/", [], b""))

    def test_function_handler(self):
        wit_context.service_name = lambda: "svc"
        Handler = export(lambda req: {"svc": nanogrid.context.service_name(), "q": req.query_param("a")})
        self.assertEqual(json.loads(self.call(Handler, path="/?a=b").body), {"svc": "svc", "q": "b"})


class Invoke(unittest.TestCase):
    def test_call_and_call_all(self):
        def call(service, req):
            if service == "missing":
                raise Err(wit.Error_NotFound("no service"))
            return wit.Response(200, [], req.body)

        wit_invoke.call = call
        wit_invoke.call_all = lambda calls: [
            Err(wit.Error_Timeout()) if s == "slow" else Ok(wit.Response(200, [], r.body)) for s, r in calls
        ]
        resp = invoke.post_json("echo", "/", {"a": 1})
        self.assertIsInstance(resp, Response)
        self.assertEqual(resp.json_body(), {"a": 1})
        with self.assertRaises(NotFound):
            invoke.get("missing", "/")
        a, b = invoke.call_all([("echo", Request.post("/", "x")), ("slow", Request.get("/"))])
        self.assertEqual(a.text_body(), "x")
        self.assertIsInstance(b, Timeout)

    def test_barrier_and_config(self):
        wit_barrier.fan_out = lambda calls, then: f"b-{len(calls)}-{then.path}"
        wit_barrier.results = lambda bid: [Ok(wit.Response(200, [], b"{}")), Err(wit.Error_Unavailable("pending"))]
        self.assertEqual(nanogrid.barrier.fan_out([("a", Request.get("/"))], Request("POST", "/then")), "b-1-/then")
        ok, pending = nanogrid.barrier.results("b")
        self.assertTrue(ok.ok)
        self.assertIsInstance(pending, Unavailable)
        req = Request.get("/").with_header("X-Nanogrid-Barrier", "b-9")
        self.assertEqual(nanogrid.barrier.id(req), "b-9")
        wit_config.get = lambda key: {"a": "1"}.get(key)
        wit_config.get_all = lambda: [("a", "1")]
        self.assertEqual(nanogrid.config.get("a"), "1")
        self.assertEqual(nanogrid.config.get("b", "dflt"), "dflt")
        self.assertEqual(nanogrid.config.all(), {"a": "1"})


if __name__ == "__main__":
    unittest.main(verbosity=1)
