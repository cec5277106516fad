"""`fastwebhook send` (SPEC section 2) as users run it: a child process signing real requests
for a real server, which verifies them with the same schemes it serves."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid

import pytest
import trustme

from cli_support import fastwebhook
from conftest import free_port
from fastwebhook.core.errors import ConfigError
from fastwebhook.verify import SCHEMES

WORKFLOWS = """
[workflows.gh]
path = "/gh"
[workflows.gh.verify]
scheme = "github"
secret = "gh-secret"

[workflows.mac]
path = "/mac"
[workflows.mac.verify]
scheme = "hmac"
secret = "mac-secret"
header = "X-Signature"
algorithm = "sha512"
encoding = "base64"
prefix = "sha512="
timestamp_header = "X-Timestamp"

[workflows.echo]
path = "/echo"
methods = ["POST", "PUT"]
mode = "sync"
[[workflows.echo.nodes]]
key = "answer"
type = "response"
body = { data = "{{$context.data}}", custom = "{{$context.headers.x-custom}}", method = "{{$context.method}}", type = "{{$context.headers.content-type}}", agent = "{{$context.headers.user-agent}}" }
"""
# Valid for every keyed scheme: Stripe keys with the whole string, Standard Webhooks with the
# base64 after whsec_, the rest with the bytes as they are.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WRONG_SECRET = "whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()


def send(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("FASTWEBHOOK_CONFIG", "CREDENTIALS_DIRECTORY")}
    return fastwebhook("send", *args, env=environ, input=stdin)


def send_json(*args: str) -> tuple[int, dict]:
    done = send(*args, "--json")
    assert done.stderr == b"", done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def server(serve):
    return serve(WORKFLOWS)


async def _execution(running, id_text: str):
    from fastwebhook.admin.api import get_execution
    return await get_execution(running.server.service.store, id_text)


def execution(running, id_text: str) -> dict:
    return running.call(lambda: _execution(running, id_text))


# --- signing ----------------------------------------------------------------------------------

def test_github_signed_request_is_accepted_and_carries_a_delivery_id(server):
    done = send(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "HTTP/1.1 202 Accepted"
    assert any(line.lower().startswith("x-execution-id: ") for line in lines)
    answer = json.loads(lines[-1])
    assert answer["status"] == "queued"
    record = execution(server, answer["execution_id"])
    delivery = record["request"]["headers"]["x-github-delivery"]
    assert uuid.UUID(delivery).version == 4
    assert record["dedup_key"] == delivery
    assert record["request"]["data"] == {}   # the default body of a POST


def test_each_send_is_a_new_delivery_and_a_fixed_one_is_a_duplicate(server):
    first = send_json(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret")
    second = send_json(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret")
    assert first[1]["status"] == second[1]["status"] == 202
    fixed = ("-H", "X-GitHub-Delivery: delivery-7")
    original = send_json(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret", *fixed)
    again = send_json(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret", *fixed)
    assert original[1]["status"] == 202
    assert (again[0], again[1]["status"]) == (0, 200)
    assert again[1]["body"] == {"execution_id": original[1]["body"]["execution_id"], "status": "duplicate"}


def test_github_wrong_secret_gets_401_and_exit_1(server):
    done = send(f"{server.url}/gh", "--scheme", "github", "--secret", "not-the-secret")
    assert done.returncode == 1
    assert done.stdout.decode().startswith("HTTP/1.1 401 ")
    assert b"invalid signature" in done.stdout


def test_hmac_signs_with_its_options(server):
    options = ("-o", "header=X-Signature", "-o", "algorithm=sha512", "-o", "encoding=base64",
               "-o", "prefix=sha512=", "--option", "timestamp_header=X-Timestamp")
    status, body = send_json(f"{server.url}/mac", "--scheme", "hmac", "--secret", "mac-secret", *options)
    assert (status, body["status"]) == (0, 202)
    status, body = send_json(f"{server.url}/mac", "--scheme", "hmac", "--secret", "wrong", *options)
    assert (status, body["status"]) == (1, 401)


def test_hmac_without_its_header_option_is_a_usage_error(server):
    done = send(f"{server.url}/mac", "--scheme", "hmac", "--secret", "mac-secret")
    assert done.returncode == 2
    assert b"--option header=" in done.stderr


def test_secret_file(server, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("gh-secret\n")
    done = send(f"{server.url}/gh", "--scheme", "github", "--secret-file", str(secret))
    assert done.returncode == 0, done.stdout


def test_a_header_given_with_H_wins_over_the_signature(server):
    done = send(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret",
                "-H", "X-Hub-Signature-256: sha256=00")
    assert done.returncode == 1
    assert done.stdout.startswith(b"HTTP/1.1 401 ")


def _probe(scheme) -> tuple[str, ...] | None:
    """The `send` arguments for a scheme whose config is only a secret; None when it needs more."""
    secrets = (SECRET.encode(),) if scheme.needs_secret else ()
    try:
        scheme.build({}, secrets, "probe")
    except ConfigError:
        return None
    return ("--secret", SECRET) if scheme.needs_secret else ()


@pytest.mark.parametrize("name", sorted(name for name, scheme in SCHEMES.items() if scheme.sign is not None))
def test_every_scheme_that_signs_is_accepted_by_its_verifier(serve, name):
    arguments = _probe(SCHEMES[name])
    if arguments is None:
        pytest.skip(f"scheme {name!r} needs options beyond a secret")
    secret_line = f'secret = "{SECRET}"' if arguments else ""
    running = serve(f'[workflows.w]\npath = "/w"\n[workflows.w.verify]\nscheme = "{name}"\n{secret_line}\n')
    # Ids where each provider puts them in the body, and no handshake `type`.
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "event_id": f"Ev{uuid.uuid4().hex}",
                       "type": "event_callback", "header": {"event_id": uuid.uuid4().hex}})
    status, answer = send_json(f"{running.url}/w", "--scheme", name, *arguments, "--data", body)
    assert (status, answer["status"]) == (0, 202), answer
    if arguments:
        status, answer = send_json(f"{running.url}/w", "--scheme", name, "--secret", WRONG_SECRET,
                                   "--data", body)
        assert (status, answer["status"]) == (1, 401), answer


# --- the request: body, headers, method ----------------------------------------------------

def test_data_from_a_file_is_sent_as_its_bytes(server, tmp_path):
    payload = tmp_path / "push.json"
    payload.write_bytes(b'{"ref": "refs/heads/main",\n "n": [1, 2]}')
    status, answer = send_json(f"{server.url}/echo", "--data", f"@{payload}")
    assert status == 0
    assert answer["body"]["data"] == {"ref": "refs/heads/main", "n": [1, 2]}
    # ...and signed as those bytes
    done = send(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret", "-d", f"@{payload}")
    assert done.returncode == 0, done.stdout


def test_data_from_stdin(server):
    done = send(f"{server.url}/echo", "--data", "@-", "--json", stdin=b'{"from": "stdin"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["body"]["data"] == {"from": "stdin"}


def test_inline_data_custom_headers_method_and_content_type(server):
    status, answer = send_json(f"{server.url}/echo", "-X", "put", "-d", "a=1&b=2",
                               "--content-type", "application/x-www-form-urlencoded",
                               "-H", "X-Custom: hello there", "-H", "User-Agent: tester/1")
    assert status == 0
    assert answer["body"] == {"data": {"a": "1", "b": "2"}, "custom": "hello there", "method": "PUT",
                              "type": "application/x-www-form-urlencoded", "agent": "tester/1"}


def test_json_output_is_status_headers_body(server):
    status, answer = send_json(f"{server.url}/echo", "-d", '{"k": "v"}')
    assert status == 0
    assert set(answer) == {"status", "headers", "body"}
    assert answer["status"] == 200
    assert answer["headers"]["content-type"].startswith("application/json")
    assert "x-request-id" in answer["headers"] and "x-execution-id" in answer["headers"]
    assert answer["body"]["data"] == {"k": "v"}
    assert answer["body"]["agent"] == "fastwebhook-send"


def test_get_and_a_non_2xx_answer(server):
    done = send(f"{server.url}/healthz", "-X", "GET")
    assert done.returncode == 0
    assert done.stdout.startswith(b"HTTP/1.1 200 OK\n")
    status, answer = send_json(f"{server.url}/echo", "-X", "GET")
    assert (status, answer["status"]) == (1, 405)
    assert answer["headers"]["allow"] == "POST, PUT"


def test_verbose_prints_the_request_to_stderr(server):
    done = send(f"{server.url}/gh", "--scheme", "github", "--secret", "gh-secret", "-v")
    assert done.returncode == 0
    err = done.stderr.decode()
    assert err.startswith("> POST /gh HTTP/1.1\n")
    assert "> X-Hub-Signature-256: sha256=" in err and "> X-GitHub-Delivery: " in err


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("--scheme", "github"), b"needs --secret"),
    (("--scheme", "nope", "--secret", "x"), b"unknown scheme 'nope'"),
    (("--secret", "x"), b"uses no secret"),
    (("--secret", "x", "--secret-file", "/dev/null", "--scheme", "github"), b"not both"),
    (("-H", "no colon"), b"-H wants 'Name: value'"),
    (("-d", "@/no/such/file"), b"No such file"),
    (("-o", "novalue", "--scheme", "hmac", "--secret", "x"), b"--option wants KEY=VALUE"),
    (("-X", "P OST"), b"not an HTTP method"),
])
def test_usage_errors_exit_2(args, message):
    done = send("http://127.0.0.1:9/x", *args)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert done.stdout == b""


def test_bad_url_and_argparse_errors_exit_2():
    assert send("ftp://example.com/x").returncode == 2
    assert send("http://127.0.0.1:99999/x").returncode == 2
    assert send().returncode == 2                       # no URL
    assert send("http://x/", "--timeout", "soon").returncode == 2


def test_unreachable_receiver_exits_1():
    done = send(f"http://127.0.0.1:{free_port()}/x", "--timeout", "5")
    assert done.returncode == 1
    assert b"refused" in done.stderr.lower()


def test_send_needs_no_config(tmp_path, server):
    # No config.toml here, and $FASTWEBHOOK_CONFIG pointing nowhere: send does not care.
    environ = dict(os.environ, FASTWEBHOOK_CONFIG=str(tmp_path / "missing.toml"))
    done = fastwebhook("send", f"{server.url}/echo", env=environ, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


# --- https ------------------------------------------------------------------------------------

@pytest.fixture
def https_server(serve, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    running = serve(f'[server]\nlisten = ["127.0.0.1:0"]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
                    f'[storage]\nurl = "sqlite:///{{db}}"\n[log]\nlevel = "warning"\n{WORKFLOWS}')
    return running, ca_file


def test_https_with_cacert(https_server):
    running, ca_file = https_server
    url = f"https://127.0.0.1:{running.port}/gh"
    status, answer = send_json(url, "--scheme", "github", "--secret", "gh-secret", "--cacert", str(ca_file))
    assert (status, answer["status"]) == (0, 202)


def test_https_refuses_an_unknown_ca_unless_insecure(https_server):
    running, _ = https_server
    url = f"https://localhost:{running.port}/gh"
    done = send(url, "--scheme", "github", "--secret", "gh-secret")
    assert done.returncode == 1
    assert b"CERTIFICATE_VERIFY_FAILED" in done.stderr
    done = send(url, "--scheme", "github", "--secret", "gh-secret", "--insecure")
    assert done.returncode == 0, done.stderr


def test_a_bad_cacert_is_a_usage_error(https_server, tmp_path):
    running, _ = https_server
    (tmp_path / "junk.pem").write_text("junk")
    done = send(f"https://127.0.0.1:{running.port}/gh", "--cacert", str(tmp_path / "junk.pem"))
    assert done.returncode == 2
    assert b"--cacert" in done.stderr
