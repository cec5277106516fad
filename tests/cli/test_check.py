"""`fastwebhook check` (issue 21, item 5): a config with several errors and broken scripts lists
them all in one run, by TOML path, in the order the loader meets them; a script's line is the
line of the file it is written in (the config, or its workflows_dir file)."""

from __future__ import annotations

import os

from cli_support import fastwebhook
from fastwebhook.config.positions import string_values

CONFIG = '''workflows_dir = "flows"
[server]
listen = ["127.0.0.1:0"]
read_timeout = "soon"
[storage]
url = "sqlite:///./hooks.db"
[admin]
token = "test-token"

[workflows.a]
mode = "sometimes"
[[workflows.a.nodes]]
key = "gate"
type = "condition"
expression = "$context.data.n >"
  [[workflows.a.nodes.then]]
  key = "broken"
  type = "script"
  code = """
const a = 1;
const b = ;
return a;
"""
[[workflows.a.nodes]]
key = "odd"
type = "teleport"
[[workflows.a.nodes]]
key = "fine"
type = "script"
code = "return 1;"

[workflows.b]
rate_limit = "fast"
[[workflows.b.nodes]]
key = "one-line"
type = "script"
code = "const x = 1;\\nx +;"
'''

FOLDER_FILE = """title = "from the folder"
[[nodes]]
key = "s"
type = "script"
code = \'\'\'
let x = 1;
x +;
\'\'\'
"""


def test_every_error_in_one_run_in_order_with_the_files_line_numbers(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "deploy.toml").write_text(FOLDER_FILE)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    environ = {k: v for k, v in os.environ.items() if k not in ("FASTWEBHOOK_CONFIG", "CREDENTIALS_DIRECTORY")}
    done = fastwebhook("check", "-c", "config.toml", cwd=tmp_path, env=environ, text=True)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert all(line.startswith("config.toml: ") for line in lines), lines
    assert [line.removeprefix("config.toml: ") for line in lines] == [
        "server.read_timeout: not a duration: 'soon' (write e.g. \"250ms\", \"15s\", \"24h\", \"7d\")",
        "workflows.a.mode: must be \"async\" or \"sync\", not 'sometimes'",
        "workflows.a.nodes[0].expression: script does not compile: SyntaxError: Unexpected token ')' (line 15)",
        "workflows.a.nodes[0].then[0].code: script does not compile: SyntaxError: Unexpected token ';' (line 21)",
        "workflows.a.nodes[1].type: unknown node type 'teleport' (known: condition, create, destroy, end, "
        "notification, query, request, response, script, update)",
        "workflows.b.rate_limit: not a rate: 'fast' (write e.g. \"500/s\", \"30/m\", \"1000/h\")",
        # an escaped \n: the script's line 2 is still the file's line 37
        "workflows.b.nodes[0].code: script does not compile: SyntaxError: Unexpected token ';' (line 37)",
        "workflows.deploy.nodes[0].code: script does not compile: SyntaxError: Unexpected token ';' "
        "(line 7 of flows/deploy.toml)",
        "8 error(s)",
    ]
    written = CONFIG.splitlines()
    assert written[15 - 1].startswith("expression = ") and written[21 - 1] == "const b = ;"
    assert written[37 - 1].startswith("code = ") and FOLDER_FILE.splitlines()[7 - 1] == "x +;"


def test_a_broken_script_alone_is_found_and_a_good_config_passes(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace('read_timeout = "soon"', "").replace('mode = "sometimes"', "")
                      .replace("const b = ;", "const b = 2;").replace('type = "teleport"', 'type = "end"')
                      .replace('rate_limit = "fast"', "").replace("x +;", "x + 1;")
                      .replace('workflows_dir = "flows"', "")
                      .replace('expression = "$context.data.n >"', 'expression = "$context.data.n > 1"'))
    environ = {k: v for k, v in os.environ.items() if k not in ("FASTWEBHOOK_CONFIG", "CREDENTIALS_DIRECTORY")}
    done = fastwebhook("check", "-c", str(config), env=environ, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{config}: ok: 2 workflow(s), storage sqlite:///{tmp_path}/hooks.db\n"
    config.write_text(config.read_text().replace("return 1;", "return 1 +;"))
    done = fastwebhook("check", "-c", str(config), env=environ, text=True)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{config}: workflows.a.nodes[2].code: script does not compile: "
                                        "SyntaxError: Unexpected token ';' (line 30)"]
    assert config.read_text().splitlines()[30 - 1] == 'code = "return 1 +;"'


def test_string_values_are_placed_on_their_file_lines():
    text = ('a = 1\ncode = "one"  # a comment\n[t]\n  code = """\nx\ny"""\ncode = \'\'\'first\nsecond\'\'\'\n'
            'code = """joined \\\nline"""\n')
    placed = [(v.value, v.first, v.lines_kept) for v in string_values(text, "code")]
    assert placed == [("one", 2, False), ("x\ny", 5, True), ("first\nsecond", 7, True), ("joined line", 9, False)]
    [multi] = [v for v in string_values(text, "code") if v.value == "x\ny"]
    assert (multi.file_line(1), multi.file_line(2), multi.file_line(9)) == (5, 6, 6)


def test_check_refuses_a_database_left_where_a_relative_path_used_to_point(tmp_path):
    """A relative SQLite path is relative to the config file's folder; one an earlier version
    resolved against the working directory must not be left behind by an upgrade unnoticed."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    (etc / "config.toml").write_text('[storage]\nurl = "sqlite:///fastwebhook.db"\n[workflows.hook]\n')
    (state / "fastwebhook.db").write_bytes(b"")   # where the old rule put it
    done = fastwebhook("check", "-c", str(etc / "config.toml"), cwd=state, text=True)
    assert done.returncode == 1
    assert f"the database is {etc / 'fastwebhook.db'}" in done.stderr and str(state / "fastwebhook.db") in done.stderr
    served = fastwebhook("serve", "-c", str(etc / "config.toml"), cwd=state, text=True)   # nor does it serve
    assert served.returncode == 1 and f"the database is {etc / 'fastwebhook.db'}" in served.stderr
    moved = fastwebhook("check", "-c", str(etc / "config.toml"), cwd=etc, text=True)   # where it is now looked for
    assert moved.returncode == 0, moved.stderr
    # an absolute url, or one that leaves the folder, is judged by what the file writes
    (etc / "config.toml").write_text(f'[storage]\nurl = "sqlite:///{etc}/fastwebhook.db"\n[workflows.hook]\n')
    assert fastwebhook("check", "-c", str(etc / "config.toml"), cwd=state, text=True).returncode == 0
    (etc / "config.toml").write_text('[storage]\nurl = "sqlite:///../var/old.db"\n[workflows.hook]\n')
    (tmp_path / "work" / "sub").mkdir(parents=True)
    (tmp_path / "work" / "var").mkdir()
    (tmp_path / "work" / "var" / "old.db").write_bytes(b"")   # ../var/old.db from work/sub, the old rule
    up = fastwebhook("check", "-c", str(etc / "config.toml"), cwd=tmp_path / "work" / "sub", text=True)
    assert up.returncode == 1 and str(tmp_path / "work" / "var" / "old.db") in up.stderr
