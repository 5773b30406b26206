"""docs/install.md, walked: its shell blocks run the way a reader pastes them, in a scratch root.

Every ```sh block of the guide carries a marker on the line before it: `<!-- walk -->` (run here)
or `<!-- walk: skip (why) -->` (installs packages, needs the bus or a running service). The blocks
are read from the guide itself, so guide and test cannot drift apart. Absolute paths under /etc,
/opt, /var/lib and /usr/local are moved into a temporary root; stand-ins for sudo (runs the
command), systemctl, usermod, apt-get, sudoedit, journalctl and influx come first on PATH and log
their arguments; `install` drops -o/-g (no telegraf user here). Each block runs under
`bash -e -o pipefail`, so any failing line fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

import tigo_execd

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "install.md"
PROVISIONING = ROOT / "grafana" / "provisioning"
_BLOCK = re.compile(r"^([^\n]*)\n```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!-- walk(?:: skip \((?P<why>[^)]+)\))? -->")
_PATHS = re.compile(r"(?<![\w.~-])/(etc|opt|var/lib|usr/local)/")
_REPO = re.compile(r"^TIGO_EXECD_REPO=\S+", re.MULTILINE)

# The start of the telegraf.conf that Telegraf's package installs: an unfiltered InfluxDB output.
STOCK_TELEGRAF_CONF = """\
[agent]
  interval = "10s"
  flush_interval = "10s"

###############################################################################
#                            OUTPUT PLUGINS                                   #
###############################################################################

# Configuration for sending metrics to InfluxDB
[[outputs.influxdb]]
  ## The full HTTP or UDP URL for your InfluxDB instance.
  # urls = ["http://127.0.0.1:8086"]

  ## The target database for metrics; will be created as needed.
  # database = "telegraf"

# Read metrics about cpu usage
[[inputs.cpu]]
  percpu = true
"""

LOGGING_STUB = '#!/bin/sh\necho "${0##*/} $*" >> "$WALK_LOG"\n'
STUBS = {
    "sudo": '#!/bin/sh\nexec "$@"\n',
    # GNU install without -o/-g OWNER: the scratch root has no telegraf or grafana user.
    "install": '#!/bin/bash\nargs=()\nwhile [ $# -gt 0 ]; do\n'
               '  case "$1" in -o|-g) shift 2 ;; *) args+=("$1"); shift ;; esac\n'
               'done\nexec /usr/bin/install "${args[@]}"\n',
    **{name: LOGGING_STUB for name in
       ("systemctl", "usermod", "apt-get", "sudoedit", "journalctl", "influx")},
}


def blocks() -> list[tuple[str | None, str]]:
    """(why skipped or None, text) of every ```sh block; a block without a marker fails."""
    found = []
    for before, text in _BLOCK.findall(GUIDE.read_text()):
        mark = _MARK.fullmatch(before.strip())
        assert mark, f"no <!-- walk --> marker before the block:\n{text}"
        found.append((mark["why"], text))
    return found


def walked() -> list[str]:
    return [text for why, text in blocks() if why is None]


def scratch(tmp_path: Path, default: str | None) -> tuple[Path, dict[str, str]]:
    """A root as Telegraf's package leaves it, and the environment with the stand-ins."""
    root = tmp_path / "root"
    (root / "etc" / "telegraf" / "telegraf.d").mkdir(parents=True)
    (root / "etc" / "telegraf" / "telegraf.conf").write_text(STOCK_TELEGRAF_CONF)
    (root / "etc" / "default").mkdir()
    if default is not None:
        (root / "etc" / "default" / "telegraf").write_text(default)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "WALK_LOG": str(tmp_path / "log"),
           "HOME": str(tmp_path), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return root, env


def walk(root: Path, env: dict[str, str], texts: list[str], repo: Path | None = None) -> str:
    """Run each block as pasted (paths moved under root, the clone's address set to `repo`);
    the output of all of them."""
    out = []
    for text in texts:
        script = _PATHS.sub(lambda m: f"{root}/{m[1]}/", text)
        if repo is not None:
            script = _REPO.sub(f"TIGO_EXECD_REPO={repo}", script)
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], check=False, env=env,
                                cwd=root, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        out.append(result.stdout)
    return "".join(out)


def logged(env: dict[str, str]) -> list[str]:
    path = Path(env["WALK_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def check_installed(root: Path, env: dict[str, str], influx_url: str, influx_db: str) -> None:
    """What the walked blocks leave behind, wherever the settings came from."""
    etc = root / "etc"
    src = root / "opt" / "tigo-execd" / "src"
    assert (etc / "telegraf" / "telegraf.d" / "tigo.conf").read_text() == \
        (src / "telegraf" / "tigo.conf").read_text()
    assert (etc / "telegraf" / "tigo-health.conf").read_text() == \
        (src / "telegraf" / "tigo-health.conf").read_text()
    # systemd's files where systemd looks for them, under the names they are shipped as.
    units = etc / "systemd" / "system"
    assert (units / "telegraf.service.d" / "tigo-execd.conf").read_text() == \
        (src / "systemd" / "telegraf.service.d" / "tigo-execd.conf").read_text()
    assert (units / "tigo-health.service").read_text() == \
        (src / "systemd" / "tigo-health.service").read_text()
    # The main output drops the Tigo metrics: one namedrop, in the stock [[outputs.influxdb]].
    conf = (etc / "telegraf" / "telegraf.conf").read_text()
    assert conf.count("namedrop") == 1
    assert tomllib.loads(conf)["outputs"]["influxdb"][0]["namedrop"] == ["tigo_*"]
    assert [line for line in conf.splitlines() if "namedrop" not in line] == STOCK_TELEGRAF_CONF.splitlines()
    calls = logged(env)
    # The old ingest is stopped before anything else may open the serial port.
    assert calls[0].startswith("systemctl disable --now tigo-ingest.service"), calls
    for call in ("usermod -aG dialout telegraf", "systemctl daemon-reload", "systemctl enable --now telegraf",
                 "systemctl enable --now tigo-health", "systemctl restart grafana-server",
                 f'influx -execute CREATE DATABASE "{influx_db}"'):
        assert call in calls, calls
    # Grafana: the data source on the settings' database, the provider on the dashboard's folder.
    grafana = etc / "grafana" / "provisioning"
    source = yaml.safe_load((grafana / "datasources" / "tigo.yaml").read_text())["datasources"][0]
    assert (source["url"], source["jsonData"]["dbName"]) == (influx_url, influx_db)
    provider = yaml.safe_load((grafana / "dashboards" / "tigo.yaml").read_text())["providers"][0]
    folder = root / provider["options"]["path"].lstrip("/")
    dashboard = json.loads((folder / "tigo-dashboard.json").read_text())
    assert "${DS_" not in json.dumps(dashboard)
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["current"]["value"] == source["uid"]


# ---------------------------------------------------------------- the guide and its files

def test_every_shell_block_is_marked_and_the_install_path_is_walked():
    texts = walked()
    joined = "\n".join(texts)
    for step in ("git clone", "pip install", "/etc/default/telegraf", "namedrop", "CREATE DATABASE",
                 "systemd/tigo-health.service", "grafana/provisioning"):
        assert step in joined, f"no walked block does {step!r}"
    assert all(why.strip() for why, _ in blocks() if why is not None)
    assert len(_REPO.findall(joined)) == 1  # the clone's address is a variable, set before use


def test_provisioning_files_are_grafanas_format_and_agree_with_guide_and_dashboard():
    """apiVersion 1 files (https://grafana.com/docs/grafana/latest/administration/provisioning/)
    whose uid, database and path are the ones the guide's walked blocks rely on."""
    sources = yaml.safe_load((PROVISIONING / "datasources" / "tigo.yaml").read_text())
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert {"name", "type", "access", "uid", "url", "jsonData"} <= set(source)
    assert source["name"] == source["uid"]  # found by the dashboard variable either way
    assert (source["type"], source["access"], source["jsonData"]["version"]) == \
        ("influxdb", "proxy", "InfluxQL")
    assert source["jsonData"]["dbName"] == "bms" and source["url"] == "http://127.0.0.1:8086"  # the defaults
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "tigo.yaml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["name"] and provider["orgId"] == 1
    grafana_block = next(t for t in walked() if "grafana/provisioning" in t)
    assert f"{provider['options']['path']}/tigo-dashboard.json" in grafana_block
    assert f"s/\\${{DS_INFLUXDB}}/{source['uid']}/g" in grafana_block
    # The share file keeps its import input (the manual route); every query goes through the
    # data source variable, whose value the input (or the guide's substitution) sets.
    dashboard = json.loads((ROOT / "grafana" / "tigo-dashboard.json").read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_INFLUXDB"]
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["current"]["value"] == "${DS_INFLUXDB}" and variable["query"] == "influxdb"
    refs = set(re.findall(r'"datasource": \{[^}]*"uid": "([^"]*)"', json.dumps(dashboard)))
    assert refs == {"${datasource}"}


def test_present_settings_file_is_left_byte_identical_and_its_values_are_used(tmp_path):
    """/etc/default/telegraf exists: never overwritten, the missing variables are listed, and the
    database and InfluxDB address the later blocks use are the ones it names."""
    mine = "# mine\nTIGO_SOURCE=/dev/serial/by-id/usb-mine\nINFLUX_URL=http://influx.lan:8086\nINFLUX_DB=solar\n"
    root, env = scratch(tmp_path, mine)
    (root / "opt" / "tigo-execd").mkdir(parents=True)
    (root / "opt" / "tigo-execd" / "src").symlink_to(ROOT)  # step 3's clone, without cloning
    texts = [t for t in walked() if "git clone" not in t]
    before = (root / "etc" / "default" / "telegraf").stat()
    out = walk(root, env, texts) + walk(root, env, texts)  # pasted twice
    assert (root / "etc" / "default" / "telegraf").read_text() == mine
    assert (root / "etc" / "default" / "telegraf").stat().st_mtime_ns == before.st_mtime_ns
    assert "add: MQTT_SERVER=tcp://127.0.0.1:1883" in out and "add: INFLUX_DB=" not in out
    check_installed(root, env, "http://influx.lan:8086", "solar")


@pytest.mark.integration
def test_walk_the_guide_twice_on_a_fresh_root(tmp_path):
    """The whole walked path from an empty root, with a real clone and pip install, pasted twice."""
    root, env = scratch(tmp_path, None)
    texts = walked()
    walk(root, env, texts, repo=ROOT)
    settings = root / "etc" / "default" / "telegraf"
    src = root / "opt" / "tigo-execd" / "src"  # the clone: this checkout's last commit
    assert settings.read_bytes() == (src / "telegraf" / "default.example").read_bytes()
    assert stat.S_IMODE(settings.stat().st_mode) == 0o640
    first = settings.stat().st_mtime_ns
    walk(root, env, texts, repo=ROOT)
    assert settings.stat().st_mtime_ns == first  # not installed again
    version = subprocess.run([root / "opt" / "tigo-execd" / "bin" / "tigo-execd", "--version"],
                             check=False, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and tigo_execd.__version__ in version.stdout
    check_installed(root, env, "http://127.0.0.1:8086", "bms")
    shutil.rmtree(root / "opt")  # a venv is large; the rest of tmp_path is pytest's to keep


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    prose = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", prose, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_of_the_guide_leads_somewhere():
    for target in re.findall(r"\]\(([^)\s]+)\)", GUIDE.read_text()):
        if target.startswith("https://"):
            continue
        path, _, anchor = target.partition("#")
        doc = (GUIDE.parent / path).resolve() if path else GUIDE
        assert doc.exists(), target
        assert not anchor or anchor in _anchors(doc), target
