"""docker-compose.yml and the Dockerfile, checked against the code: this repository's
machines have no Docker engine, so the stack is never started here. What can drift without
Docker noticing is checked: the services the README promises, their health checks and
dependencies, the image stages, and that every command line the file gives parses with the
CLI (``flows.cli``) and the locustfile's own options."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import orjson
import yaml

from flows.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
STAGES = re.findall(r"^FROM \S+ AS (\w+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


def test_the_stack_the_readme_promises():
    assert {"kafka", "redis", "postgres", "setup", "engine", "gateway", "archiver",
            "locust"} <= SERVICES.keys()
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")  # the official image, KRaft mode
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker",
                                                                            "controller"}
    redis_cmd = SERVICES["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"


def test_dependencies_name_services_and_wait_for_health_checks():
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on", [])
        for dep in deps:
            assert dep in SERVICES, (name, dep)
            if isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dep], (name, dep)
    for name in ("setup", "engine", "gateway"):  # they fail before Kafka and Redis answer
        deps = SERVICES[name]["depends_on"]
        assert {d: deps[d]["condition"] for d in ("kafka", "redis")} == {
            "kafka": "service_healthy", "redis": "service_healthy"}
    kafka_check = SERVICES["kafka"]["healthcheck"]["test"]
    listeners = SERVICES["kafka"]["environment"]["KAFKA_LISTENERS"]
    assert kafka_check[-1].split(":")[-1] in re.findall(r":(\d+)", listeners)


def test_builds_name_stages_of_the_dockerfile():
    # without a target, a build makes the Dockerfile's last stage (the load generator's)
    builds = {name: svc["build"] for name, svc in SERVICES.items() if "build" in svc}
    assert {name: b["target"] for name, b in builds.items()} == {
        "setup": "engine", "engine": "engine", "gateway": "engine", "archiver": "engine",
        "locust": "load"}
    assert set(STAGES) == {"wheel", "engine", "load"}


def _cli_parses(args: list[str]) -> None:
    """Parse ``chargeflow ARGS`` as click would, down to the (sub)command, without running
    it: an unknown option or a bad value raises."""
    args = list(args)
    ctx = click.Context(cli, info_name="chargeflow")
    command: click.Command = cli
    while isinstance(command, click.Group):
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r}"
        ctx = click.Context(sub, info_name=name, parent=ctx)
        command = sub
    command.make_context(ctx.info_name, args, parent=ctx.parent)


def test_engine_command_parses_with_the_cli():
    _cli_parses(SERVICES["engine"]["command"])


def test_gateway_and_archiver_commands_parse_with_the_cli():
    _cli_parses(SERVICES["gateway"]["command"])
    _cli_parses(SERVICES["archiver"]["command"])
    gateway = SERVICES["gateway"]["command"]
    published = {p.split(":")[0] for p in SERVICES["gateway"]["ports"]}
    for door in ("--diameter", "--nchf", "--api"):  # listening on every interface, published
        host, port = gateway[gateway.index(door) + 1].rsplit(":", 1)
        assert host == "0.0.0.0" and port in published, door
    db = SERVICES["archiver"]["environment"]["CHARGEFLOW_DB_URL"]
    assert db.startswith("postgresql://") and "@postgres:5432/" in db
    assert {"redis", "postgres"} <= set(SERVICES["archiver"]["depends_on"])


def test_setup_commands_parse_and_name_files_that_exist():
    script = SERVICES["setup"]["command"][0]
    commands = [shlex.split(part) for part in re.split(r"&&", script)]
    ours = [c for c in commands if c and c[0] == "chargeflow"]
    assert [c[1:3] for c in ours] == [["catalog", "load"], ["accounts", "load"]]
    assert (ROOT / ours[0][3]).is_file()  # the sample catalog, copied into the image
    for c in ours:
        _cli_parses(c[1:])


def test_locust_command_parses_with_the_locustfile_options():
    args = SERVICES["locust"]["command"]
    assert (ROOT / args[args.index("-f") + 1]).is_file()
    # in a process of its own: importing locust monkey-patches sockets for gevent
    probe = ("import sys, orjson\n"
             "from bench import locustfile  # registers its options with locust\n"
             "from locust.argument_parser import get_parser\n"
             "parser = get_parser()\n"
             "print(orjson.dumps(vars(parser.parse_args(sys.argv[1:]))).decode())\n")
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"locust cannot parse {args}:\n{done.stderr[-2000:]}"
    opts = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert opts["kafka"] == "kafka:29092" and opts["locustfile"] == "bench/locustfile.py"
    assert "redis://redis:" in SERVICES["locust"]["environment"]["CHARGEFLOW_REDIS_URL"]


def test_the_image_holds_every_package_the_project_installs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[([^\]]*)\]', pyproject).group(1)
    for pkg in re.findall(r'"(\w+)\*"', packages):
        assert re.search(rf"^COPY {pkg} \./{pkg}$", dockerfile, re.MULTILINE), pkg


def test_the_image_runs_the_wheel_its_build_stage_compiled():
    """The engine image installs the wheel the "wheel" stage built with a C compiler, so
    that its per-request modules run compiled (setup.py), not the sources by ``pip install``
    on a compiler-less slim image."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    wheel = dockerfile[dockerfile.index("AS wheel"):dockerfile.index("AS engine")]
    engine = dockerfile[dockerfile.index("AS engine"):dockerfile.index("AS load")]
    assert "gcc" in wheel and "COPY pyproject.toml setup.py" in wheel
    assert re.search(r"^RUN pip wheel .*--wheel-dir /wheels \.$", wheel, re.MULTILINE)
    assert "COPY --from=wheel /wheels /wheels" in engine
    assert "COPY charging/samples ./charging/samples" in engine  # the setup service loads it
    assert re.search(r"^RUN pip install .*/wheels/\*\.whl", engine, re.MULTILINE)
