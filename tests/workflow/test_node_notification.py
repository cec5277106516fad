"""The `notification` node through the real server: mail to a real SMTP server (aiosmtpd, with
STARTTLS, implicit TLS and AUTH behind a trustme CA), messages to a real HTTP endpoint standing
in for Slack / DingTalk, and the `[channels]` settings refused at load with their TOML paths."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import orjson
import pytest
import trustme
from aiosmtpd.smtp import AuthResult

from client_support import jobs_by_node, run_to_end
from conftest import free_port
from fastwebhook.config.loader import load_config
from fastwebhook.core.errors import ConfigErrors
from http_support import RecordingServer, Reply

USER, PASSWORD = "mailer", "s3cret-pass"


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    return AuthResult(success=(auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode()),
                      handled=False, auth_data=auth_data)   # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def tls_files(tmp_path):
    """A trustme CA (written beside the config as ca.pem) and a server context for 127.0.0.1."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    return server_context


def text(part) -> str:
    """A part's text as written (SMTP carries line breaks as CRLF)."""
    return part.get_content().replace("\r\n", "\n").strip()


WORKFLOW = """
[workflows.w]
path = "/api/webhooks/w"
"""
MAIL = """
[channels.mail]
type = "smtp"
host = "127.0.0.1"
from = "fastwebhook@example.com"
"""


def notification(key: str, channel: str = "mail", **settings) -> str:
    """A notification node of workflow w as TOML: each setting's value as JSON writes it (a
    string, a list, a number or a boolean in JSON is the same in TOML)."""
    lines = [f'key = "{key}"', 'type = "notification"', f'channel = "{channel}"']
    lines += [f"{name} = {json.dumps(value)}" for name, value in settings.items()]
    return "\n[[workflows.w.nodes]]\n" + "\n".join(lines) + "\n"


def smtp_channel(name: str, port: int, extra: str = "") -> str:
    # The port as a string, as `port = "${SMTP_PORT:-25}"` gives it.
    return f"""
[channels.{name}]
type = "smtp"
host = "127.0.0.1"
port = "{port}"
from = "Fastwebhook <fastwebhook@example.com>"
timeout = "2s"
{extra}
"""


# --- smtp ----------------------------------------------------------------------------------------

def test_a_mail_goes_out_with_from_to_subject_message_id_and_text(serve, smtp_servers):
    inbox, port = smtp_servers()
    running = serve(smtp_channel("mail", port) + WORKFLOW + notification(
        "mail", to="{{$context.data.email}}", subject="Hi {{$context.data.name}}",
        text="Thanks, {{$context.data.name}}: order {{$context.data.order}} is paid."))
    record = run_to_end(running, "/api/webhooks/w", {"email": "ada@example.org", "name": "Ada", "order": 42})
    assert record["status"] == "resolved", record
    (mail,) = inbox.mails
    assert mail.mail_from == "fastwebhook@example.com"
    assert mail.rcpt_tos == ["ada@example.org"]
    assert mail.authenticated_as is None
    message = mail.message
    assert message["From"] == "Fastwebhook <fastwebhook@example.com>"
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Hi Ada"
    assert message["Date"]
    assert message["Message-ID"] == f"<{record['id']}.mail@example.com>"
    assert message.get_content_type() == "text/plain"
    assert text(message) == "Thanks, Ada: order 42 is paid."
    assert jobs_by_node(record)["mail"]["result"] == {"channel": "mail", "to": ["ada@example.org"],
                                             "message_id": f"<{record['id']}.mail@example.com>"}


def test_text_and_html_go_as_multipart_alternative_to_every_listed_recipient(serve, smtp_servers):
    inbox, port = smtp_servers()
    running = serve(smtp_channel("mail", port) + WORKFLOW + notification(
        "mail", to=["{{$context.data.owner}}", "Bea <bea@example.org>, cy@example.org"],
        subject="{{$context.data.title}}", text="Plain: {{$context.data.title}}",
        html="<p>Rich: <b>{{$context.data.title}}</b></p>"))
    record = run_to_end(running, "/api/webhooks/w", {"owner": "ada@example.org", "title": "Two\nlines"})
    assert record["status"] == "resolved", record
    (mail,) = inbox.mails
    assert mail.rcpt_tos == ["ada@example.org", "bea@example.org", "cy@example.org"]
    message = mail.message
    assert message["Subject"] == "Two lines"      # a header cannot hold the line break
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.iter_parts()
    assert plain.get_content_type() == "text/plain" and text(plain) == "Plain: Two\nlines"
    assert rich.get_content_type() == "text/html" and "<b>Two\nlines</b>" in text(rich)
    assert jobs_by_node(record)["mail"]["result"]["to"] == ["ada@example.org", "bea@example.org", "cy@example.org"]


def test_starttls_and_auth_deliver_and_a_wrong_password_fails_with_the_servers_reply(serve, smtp_servers, tls_files, tmp_path):
    inbox, port = smtp_servers(tls_context=tls_files, require_starttls=True, auth_require_tls=True,
                               authenticator=authenticate)
    auth = f'starttls = true\nusername = "{USER}"\nca_file = "ca.pem"'
    running = serve(smtp_channel("mail", port, f'{auth}\npassword = "{PASSWORD}"')
                    + smtp_channel("wrong", port, f'{auth}\npassword = "guess"') + WORKFLOW
                    + notification("bad", "wrong", to="ada@example.org", text="never", ignore_fail=True)
                    + notification("good", to="ada@example.org", subject="Secure", text="Over TLS"))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    bad = jobs_by_node(record)["bad"]
    assert bad["status"] == "failed"
    assert "channel 'wrong'" in bad["error"] and "535" in bad["error"]
    assert PASSWORD not in bad["error"] and "guess" not in bad["error"]
    (mail,) = inbox.mails
    assert mail.authenticated_as == USER.encode()
    assert mail.message["Subject"] == "Secure"


def test_implicit_tls_delivers(serve, smtp_servers, tls_files):
    inbox, port = smtp_servers(ssl_context=tls_files)
    running = serve(smtp_channel("mail", port, 'tls = true\nca_file = "ca.pem"') + WORKFLOW
                    + notification("mail", to="ada@example.org", text="From the first byte"))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    assert text(inbox.mails[0].message) == "From the first byte"


def test_an_untrusted_certificate_fails_unless_tls_verify_is_off(serve, smtp_servers, tls_files):
    inbox, port = smtp_servers(tls_context=tls_files, require_starttls=True)
    running = serve(smtp_channel("strict", port, "starttls = true")
                    + smtp_channel("lab", port, "starttls = true\ntls_verify = false") + WORKFLOW
                    + notification("strict", "strict", to="ada@example.org", text="checked", ignore_fail=True)
                    + notification("lab", "lab", to="ada@example.org", text="unchecked"))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "resolved", record
    assert jobs_by_node(record)["strict"]["status"] == "failed"
    assert "certificate" in jobs_by_node(record)["strict"]["error"].lower()
    assert [text(m.message) for m in inbox.mails] == ["unchecked"]


def test_refused_recipients_and_an_unreachable_server(serve, smtp_servers):
    inbox, port = smtp_servers()
    running = serve(smtp_channel("mail", port) + smtp_channel("down", free_port()) + WORKFLOW
                    + notification("nobody", to="nobody@example.org", text="lost", ignore_fail=True)
                    + notification("down", "down", to="ada@example.org", text="lost", ignore_fail=True)
                    + notification("some", to=["ada@example.org", "nobody@example.org"], text="half")
                    + notification("garbage", to="{{$context.data.missing}}", text="nowhere"))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "failed"
    assert "550 5.1.1 no such mailbox here" in jobs_by_node(record)["nobody"]["error"]
    assert "channel 'down'" in jobs_by_node(record)["down"]["error"]
    some = jobs_by_node(record)["some"]
    assert some["status"] == "resolved"
    assert some["result"]["refused"] == {"nobody@example.org": "550 5.1.1 no such mailbox here"}
    assert "not a mail address" in jobs_by_node(record)["garbage"]["error"]
    assert [m.rcpt_tos for m in inbox.mails] == [["ada@example.org"]]


def test_a_templated_recipient_is_one_address_a_list_from_the_data_is_bounded_and_no_header_gets_in(serve, smtp_servers):
    inbox, port = smtp_servers()
    def node(key: str, field: str, **extra) -> str:
        return notification(key, to=f"{{{{$context.data.{field}}}}}", text="hello", ignore_fail=True, **extra)
    running = serve(smtp_channel("mail", port) + WORKFLOW
                    + node("several", "several") + node("injected", "injected") + node("team", "team")
                    + node("crowd", "crowd") + node("capped", "team", max_recipients=2))
    team = ["ada@example.org", "Bea <bea@example.org>", "cy@example.org"]
    record = run_to_end(running, "/api/webhooks/w", {
        "several": "a@example.org, b@example.org, c@example.org",
        "injected": "ada@example.org\r\nBcc: eve@example.org",
        "team": team, "crowd": [f"p{n}@example.org" for n in range(11)]})
    jobs = jobs_by_node(record)
    assert "holds 3 addresses" in jobs["several"]["error"] and "one address" in jobs["several"]["error"]
    assert "line break" in jobs["injected"]["error"]
    assert jobs["team"]["status"] == "resolved"
    assert "11 recipients, over max_recipients = 10" in jobs["crowd"]["error"]
    assert "3 recipients, over max_recipients = 2" in jobs["capped"]["error"]
    (mail,) = inbox.mails          # only the data's list went out, to its three addresses
    assert mail.rcpt_tos == ["ada@example.org", "bea@example.org", "cy@example.org"]
    assert mail.message["To"] == "ada@example.org, bea@example.org, cy@example.org"
    assert mail.message["Bcc"] is None


# --- http channels -------------------------------------------------------------------------------

def test_an_http_channel_gets_the_message_json_escaped_in_its_body_or_url_encoded_in_its_url(serve, endpoint):
    running = serve(f"""
[channels.chat]
type = "http"
url = "{endpoint.url}/hooks/abc"
body = '{{"text": "{{{{message}}}}", "username": "fastwebhook"}}'

[channels.sms]
type = "http"
method = "GET"
url = "{endpoint.url}/send?to=123&text={{{{message}}}}"
headers = {{ Authorization = "Bearer gw-token" }}
""" + WORKFLOW + notification("chat", "chat", message="Deploying {{$context.data.commit}} by {{$context.data.who}}")
                    + notification("sms", "sms", message="{{$context.data.who}} & co"))
    who = 'Ada "the first" \\ Lovelace\nlondon'
    record = run_to_end(running, "/api/webhooks/w", {"commit": "abc123", "who": who})
    assert record["status"] == "resolved", record
    chat, sms = endpoint.received
    assert chat.method == "POST" and chat.path == "/hooks/abc"
    assert chat.headers["content-type"] == "application/json"
    assert orjson.loads(chat.body) == {"text": f"Deploying abc123 by {who}", "username": "fastwebhook"}
    assert sms.method == "GET" and sms.query == {"to": ["123"], "text": [f"{who} & co"]}
    assert sms.headers["authorization"] == "Bearer gw-token"
    assert jobs_by_node(record)["chat"]["result"] == {"channel": "chat", "status": 200}
    assert "/hooks/abc" not in str(jobs_by_node(record)["chat"]["logs"])     # the URL is a credential


def test_an_http_channel_answering_non_2xx_or_an_errcode_fails_the_node(serve, endpoint):
    endpoint.replies += [Reply(403, b"invalid_token", {"Content-Type": "text/plain"}),
                         Reply(200, b'{"errcode": 310000, "errmsg": "keywords not in content"}')]
    running = serve(f"""
[channels.chat]
type = "http"
url = "{endpoint.url}/robot/send?access_token=tok"
""" + WORKFLOW + notification("slack", "chat", message="one", ignore_fail=True)
                    + notification("dingtalk", "chat", message="two"))
    record = run_to_end(running, "/api/webhooks/w", {})
    assert record["status"] == "failed"
    assert "answered 403: invalid_token" in jobs_by_node(record)["slack"]["error"]
    assert "errcode 310000: keywords not in content" in jobs_by_node(record)["dingtalk"]["error"]
    assert "access_token" not in record["error"]
    assert [orjson.loads(r.body) for r in endpoint.received] == [{"text": "one"}, {"text": "two"}]


def test_an_http_channel_follows_no_redirect_and_reaches_no_denied_address(serve, endpoint):
    other = RecordingServer()
    try:
        endpoint.replies.append(Reply(302, b"", {"Location": f"{other.url}/elsewhere"}))
        running = serve(f"""
[outbound]
deny = ["169.254.0.0/16", "127.0.0.2/32"]

[channels.chat]
type = "http"
url = "{endpoint.url}/hooks/abc"
headers = {{ Authorization = "Bearer chat-token" }}

[channels.inside]
type = "http"
url = "http://127.0.0.2:{endpoint.url.rpartition(":")[2]}/hooks/abc"
""" + WORKFLOW + notification("chat", "chat", message="hi", ignore_fail=True)
                        + notification("inside", "inside", message="hi"))
        record = run_to_end(running, "/api/webhooks/w", {})
        assert "answered 302" in jobs_by_node(record)["chat"]["error"]
        assert len(endpoint.received) == 1 and other.received == []
        assert "127.0.0.2 is denied by [outbound] deny" in jobs_by_node(record)["inside"]["error"]
    finally:
        other.close()


# --- config --------------------------------------------------------------------------------------

def config_errors(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path), {})
    found: dict[str, str] = {}
    for error in info.value.errors:
        found[error.path] = f"{found[error.path]} | {error.message}" if error.path in found else error.message
    return found


def test_bad_channels_are_refused_with_their_toml_paths(tmp_path):
    found = config_errors(tmp_path, """
[channels.mail]
type = "smtp"
host = "127.0.0.1"
port = "twenty-five"
from = "nobody"
hots = "typo"
tls = true
starttls = true
username = "u"
ca_file = "missing.pem"

[channels.chat]
type = "http"
url = "hooks.example.com/abc"
body = '{"text": {{message}}, "who": "{{$context.data.who}}"}'
method = "DELETE"

[channels.pager]
type = "pigeon"
""")
    assert "port number" in found["channels.mail.port"]
    assert "mail address" in found["channels.mail.from"]
    assert found["channels.mail.hots"] == "unknown setting"
    assert "exclude each other" in found["channels.mail.starttls"]
    assert "username and password" in found["channels.mail.password"]
    assert "missing.pem" in found["channels.mail.ca_file"]
    assert "http:// or https://" in found["channels.chat.url"]
    assert "only {{message}}" in found["channels.chat.body"] and "not JSON" in found["channels.chat.body"]
    assert "DELETE" in found["channels.chat.method"]
    assert "pigeon" in found["channels.pager.type"]


def test_bad_notification_nodes_are_refused_with_their_toml_paths(tmp_path):
    found = config_errors(tmp_path, MAIL + """
[channels.chat]
type = "http"
url = "https://hooks.example.com/abc"
""" + WORKFLOW + notification("a", "team-chat", message="hi") + notification("b", subject="no one to send to")
                          + notification("c", "chat", to="ada@example.org") + notification("d", to=42, text="x"))
    p = "workflows.w.nodes"
    assert "team-chat" in found[f"{p}[0].channel"] and "chat, mail" in found[f"{p}[0].channel"]
    assert "recipient" in found[f"{p}[1].to"]
    assert "text, html or both" in found[f"{p}[1]"]
    assert "not a setting for http channel 'chat'" in found[f"{p}[2].to"]
    assert "needs a message" in found[f"{p}[2].message"]
    assert "string or a list" in found[f"{p}[3].to"]


def test_recipients_and_max_recipients_are_checked_at_load(tmp_path):
    found = config_errors(tmp_path, MAIL + WORKFLOW
                          + notification("a", to=["a@example.org, b@example.org", "c@example.org"], max_recipients=2,
                                         text="x")
                          + notification("b", to="ada@example.org\nBcc: eve@example.org", text="x")
                          + notification("c", to="ada@example.org", max_recipients=0, text="x"))
    p = "workflows.w.nodes"
    assert "3 recipients, over max_recipients = 2" in found[f"{p}[0].to"]
    assert "line break" in found[f"{p}[1].to"]
    assert "from 1 to" in found[f"{p}[2].max_recipients"]
