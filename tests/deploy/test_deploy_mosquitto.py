"""deploy/mosquitto/ as compose runs it, on a real Mosquitto 2: mqtt-auth's logins, ACL and certificate, then the
shipped mosquitto.conf. Nobody gets in without a password, only an admin can switch a camera, the service's own
user can publish everything it publishes, and TLS is offered to whoever trusts the generated CA. mqtt-auth also
makes the HTTP API's token, which the service and Prometheus read and nobody else."""

from __future__ import annotations

import os
import queue
import re
import ssl
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from prometheus_client import CollectorRegistry

from harness.machine import wait_until
from service.comms.mqtt import MqttPublisher
from service.comms.outbox import Outbox
from service.comms.payloads import ExpressionChange, GatewayModel
from service.config import MqttConfig, load_settings
from service.metrics import Metrics
from tests.deploy.conftest import MQTT, MQTT_AUTH, MQTT_TLS, WEBSOCKETS, Broker, MqttAuth, Recorder
from tests.deploy.helpers import (
    DEPLOY,
    DOCKER_CONFIG,
    REPO,
    SERVICE_DOCKERFILE,
    compose,
    container_port,
    parse_dockerfile,
    tool,
    volume_targets,
)

TRANSPORTS = {"mqtt": "tcp", "websockets": "websockets"}
SHIPPED_USERS = ("fer", "admin", "homeassistant", "dashboard")
# The HTTP API's bearer token, in the volume.
API_TOKEN = "api-token"


def _client(
    broker: Broker, shipped_port: int, login: tuple[str, str] | None, *, ca: Path | None = None
) -> tuple[mqtt.Client, str]:
    """A client (loop running) and the broker's answer to its CONNECT."""
    listener = broker.listeners[shipped_port]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport=TRANSPORTS[listener.protocol])
    if login:
        client.username_pw_set(*login)
    if listener.tls:
        client.tls_set(ca_certs=str(ca) if ca else None)
    answers: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.put(str(reason))
    client.connect("127.0.0.1", listener.port)
    client.loop_start()
    try:
        return client, answers.get(timeout=10)
    except queue.Empty:
        client.loop_stop()
        pytest.fail(f"no CONNACK on {shipped_port}:\n{broker.log.read_text()}")


def _answer(broker: Broker, shipped_port: int, login: tuple[str, str] | None) -> str:
    client, answer = _client(broker, shipped_port, login, ca=broker.auth.ca)
    client.disconnect()
    client.loop_stop()
    return answer


def _close(*clients: mqtt.Client) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()


# -- what compose runs ------------------------------------------------------------------------------


def test_listeners_are_the_ports_compose_publishes(broker: Broker) -> None:
    # Every listener must be declared, or Mosquitto 2 falls back to local-only mode.
    assert {(shipped, lsn.protocol, lsn.tls) for shipped, lsn in broker.listeners.items()} == {
        (MQTT, "mqtt", False), (MQTT_TLS, "mqtt", True), (WEBSOCKETS, "websockets", False)}  # fmt: skip
    published = {container_port(p) for p in compose()["services"]["mosquitto"]["ports"]}
    assert set(broker.listeners) == published


def _rendered_ports(tmp_path: Path, env: str) -> set[str]:
    """The broker's ports as `docker-compose config` renders them with ``env`` as the whole .env file."""
    env_file = tmp_path / "env"
    env_file.write_text(env)
    out = subprocess.run([tool("docker-compose"), "--env-file", str(env_file), "config"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=120).stdout  # fmt: skip
    return {str(p) for p in yaml.safe_load(out)["services"]["mosquitto"]["ports"]}


def test_the_broker_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    assert _rendered_ports(tmp_path, "") == {"127.0.0.1:1883:1883/tcp", "127.0.0.1:8883:8883/tcp",
                                             "127.0.0.1:9001:9001/tcp"}  # fmt: skip
    # Home Assistant on another machine: TLS opens to the LAN, the plain listeners stay local.
    assert _rendered_ports(tmp_path, "FEREDGE_MQTT_TLS_BIND=0.0.0.0\n") == {
        "127.0.0.1:1883:1883/tcp", "0.0.0.0:8883:8883/tcp", "127.0.0.1:9001:9001/tcp"}  # fmt: skip


def test_compose_wires_the_auth_volume_where_each_reader_expects_it() -> None:
    services = compose()["services"]
    init = services["mqtt-auth"]
    # The script's defaults are the container's paths: the volume at /auth, the shipped files at /shipped.
    script = MQTT_AUTH.read_text()
    assert "AUTH_DIR=${AUTH_DIR:-/auth}" in script and "SHIPPED_DIR=${SHIPPED_DIR:-/shipped}" in script
    assert volume_targets(init) == {
        "/shipped/acl": "./deploy/mosquitto/acl",
        "/shipped/conf.d": "./deploy/mosquitto/conf.d",
        "/auth": "mqtt-auth",
    }
    # They wait for it, and only they read its volume, read-only (the broker's entrypoint would chown it).
    readers = {name for name, service in services.items() if "mqtt-auth" in volume_targets(service).values()}
    assert readers == {"mqtt-auth", "mosquitto", "fer-service", "prometheus", "grafana"}
    for name in ("mosquitto", "fer-service", "prometheus", "grafana"):
        assert services[name]["depends_on"]["mqtt-auth"] == {"condition": "service_completed_successfully"}
        assert next(v for v in services[name]["volumes"] if v.startswith("mqtt-auth:")).endswith(":ro")
    assert volume_targets(services["mosquitto"])["/mosquitto/auth"] == "mqtt-auth"
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for key in ("password_file", "acl_file", "cafile", "certfile", "keyfile"):
        for path in [line.split()[1] for line in conf.splitlines() if line.startswith(f"{key} ")]:
            assert path.startswith("/mosquitto/auth/"), (key, path)

    # The service reads its own password from there: users/<its user name>, owned by its uid.
    settings = load_settings(DOCKER_CONFIG, {})
    mount = next(target for target, source in volume_targets(services["fer-service"]).items()
                 if source == "mqtt-auth")  # fmt: skip
    assert settings.mqtt.password_file == Path(mount) / "users" / settings.mqtt.username
    assert f"SERVICE_USER={settings.mqtt.username}\n" in script
    # And its API token, with no FER_API__TOKEN set (compose passes it through only when it is).
    assert settings.api.token is None and settings.api.token_file == Path(mount) / API_TOKEN
    assert f"api_token=$AUTH_DIR/{API_TOKEN}\n" in script
    service_uid, _ = _compose_ids()
    assert f"SERVICE_UID=${{SERVICE_UID:-{service_uid}}}" in script
    # The same mosquitto_passwd as the broker that reads its hashes.
    context = REPO / init["build"]["context"]
    stages = parse_dockerfile(context / "Dockerfile")
    assert [s for s in (context / "Dockerfile").read_text().splitlines() if s.startswith("FROM ")] == [
        f"FROM {services['mosquitto']['image']}"]  # fmt: skip
    for ins in stages[-1].all("COPY"):
        assert (context / ins.args.split()[0]).is_file(), ins.args
    assert "mqtt-auth.sh" in stages[-1].last("ENTRYPOINT").args


# -- mqtt-auth ------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _compose_ids() -> tuple[int, int]:
    """The service's uid (deploy/service.Dockerfile's FER_UID) and the group compose has mqtt-auth give the
    API token: the prom/prometheus image's `nobody`."""
    service_uid = next(i.args.split("=", 1)[1] for i in parse_dockerfile(SERVICE_DOCKERFILE)[-1].all("ARG")
                       if i.args.startswith("FER_UID="))  # fmt: skip
    environment = dict(e.split("=", 1) for e in compose()["services"]["mqtt-auth"]["environment"])
    return int(service_uid), int(environment["PROMETHEUS_GID"])


def _script(auth: MqttAuth, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """mqtt-auth.sh as MqttAuth.run runs it, with ``env`` on top of its variables (MqttAuth passes neither
    PROMETHEUS_GID nor ids other than this user's), whatever its exit status."""
    tools = [tool("mosquitto_passwd"), tool("openssl")]
    path = os.pathsep.join([*dict.fromkeys(str(Path(t).parent) for t in tools), os.environ["PATH"]])
    uid = str(os.getuid())
    base = {"PATH": path, "AUTH_DIR": str(auth.dir), "SHIPPED_DIR": str(auth.shipped), "BROKER_UID": uid,
            "SERVICE_UID": uid}  # fmt: skip
    return subprocess.run(["sh", str(MQTT_AUTH), *args], input=stdin, env=base | env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def _readable_by_group(root: Path, gid: int) -> set[str]:
    """The files under ``root`` that a user who owns none of them, with ``gid`` as its group, may read."""
    found = set()
    for path in root.rglob("*"):
        mode = path.stat()
        if path.is_file() and (mode.st_mode & stat.S_IROTH or (mode.st_gid == gid and mode.st_mode & stat.S_IRGRP)):
            found.add(path.relative_to(root).as_posix())
    return found


def _names(cert: Path) -> str:
    return subprocess.run([tool("openssl"), "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_mqtt_auth_makes_private_logins_once_and_keeps_them(tmp_path: Path) -> None:
    auth = MqttAuth(tmp_path, {"local.acl": "user alice\ntopic read fer/#\n"})
    first = auth.run()
    passwords = {user: auth.password(user) for user in SHIPPED_USERS}
    assert len(set(passwords.values())) == len(SHIPPED_USERS) and all(len(p) >= 32 for p in passwords.values())
    token = (auth.dir / API_TOKEN).read_text().strip()
    # Nothing secret is printed, and each secret is readable by its owner alone (the API token too, with no
    # PROMETHEUS_GID: the script as it runs outside compose).
    assert not [p for p in [*passwords.values(), token] if p in first.stdout + first.stderr]
    assert _mode(auth.dir / "passwd") == _mode(auth.dir / "acl") == 0o600
    assert {_mode(auth.dir / "users" / user) for user in SHIPPED_USERS} == {0o400}
    assert _mode(auth.dir / API_TOKEN) == 0o400
    assert _mode(auth.dir / "tls" / "server.key") == _mode(auth.dir / "tls" / "ca.key") == 0o600
    assert _mode(auth.dir / "tls" / "server.crt") == _mode(auth.ca) == 0o644
    hashed = dict(line.split(":", 1) for line in (auth.dir / "passwd").read_text().splitlines())
    assert set(hashed) == set(SHIPPED_USERS) and not set(hashed.values()) & set(passwords.values())
    # The shipped ACL, then conf.d/*.acl.
    acl = (auth.dir / "acl").read_text()
    assert acl.startswith((DEPLOY / "mosquitto" / "acl").read_text()) and acl.endswith("user alice\ntopic read fer/#\n")
    assert "IP Address:127.0.0.1" in _names(auth.dir / "tls" / "server.crt")

    # The next `up`: nothing changes, the certificate included.
    cert = (auth.dir / "tls" / "server.crt").read_bytes()
    again = auth.run()
    assert again.stdout == "" and {user: auth.password(user) for user in SHIPPED_USERS} == passwords
    assert (auth.dir / "tls" / "server.crt").read_bytes() == cert
    assert (auth.dir / API_TOKEN).read_text().strip() == token

    # A new name for the certificate: re-issued by the same CA.
    ca = auth.ca.read_bytes()
    auth.run(tls_names="gateway.lan,192.168.1.10")
    assert auth.ca.read_bytes() == ca
    assert "DNS:gateway.lan" in _names(auth.dir / "tls" / "server.crt")
    assert "IP Address:192.168.1.10" in _names(auth.dir / "tls" / "server.crt")
    subprocess.run([tool("openssl"), "verify", "-CAfile", str(auth.ca), str(auth.dir / "tls" / "server.crt")],
                   check=True, capture_output=True)  # fmt: skip

    # Users: a password of one's choosing on standard input (a new user too), shown on request, removed.
    auth.run("passwd", "bridge", stdin="a-chosen-password\n")
    assert auth.password("bridge") == "a-chosen-password"
    assert auth.run("show", "bridge").stdout == "a-chosen-password\n"
    assert auth.run("show", "ca").stdout == auth.ca.read_text()
    auth.run("remove", "bridge")
    assert "bridge:" not in (auth.dir / "passwd").read_text()


def test_mqtt_auth_makes_an_api_token_for_the_service_and_prometheus_alone(tmp_path: Path) -> None:
    """As compose runs it: the token belongs to the service's uid and Prometheus' group, 0440, is kept across
    starts, is shown on request, and is made anew once removed."""
    service_uid, prometheus_gid = _compose_ids()
    if os.geteuid() != 0:
        # Only root hands a file to another user: here this user and its group stand in for both.
        service_uid, prometheus_gid = os.getuid(), os.getgid()
    ids = {"SERVICE_UID": str(service_uid), "PROMETHEUS_GID": str(prometheus_gid)}
    auth = MqttAuth(tmp_path)
    token_file = auth.dir / API_TOKEN

    def owner() -> tuple[int, int, int]:
        return token_file.stat().st_uid, token_file.stat().st_gid, _mode(token_file)

    first = _script(auth, **ids)
    assert first.returncode == 0, first.stderr
    token = token_file.read_text()
    # 192 bits in hex: nothing a header, a shell or YAML would have to quote.
    assert re.fullmatch(r"[0-9a-f]{48}\n", token), "not 48 hex digits and a newline"
    assert token.strip() not in first.stdout + first.stderr
    assert "show api-token" in first.stdout
    assert owner() == (service_uid, prometheus_gid, 0o440)
    # Of the whole volume, Prometheus' user reads the token and the certificates, nothing else.
    assert _readable_by_group(auth.dir, prometheus_gid) == {API_TOKEN, "tls/ca.crt", "tls/server.crt"}

    # The next `up`: the same token, silently, with the same owner and mode.
    again = _script(auth, **ids)
    assert again.returncode == 0 and again.stdout == "" and token_file.read_text() == token
    assert owner() == (service_uid, prometheus_gid, 0o440)
    shown = _script(auth, "show", "api-token")
    assert shown.returncode == 0 and shown.stdout == token
    # Each run sets owner and mode anew, so a token made earlier follows PROMETHEUS_GID: unset, the service's alone.
    _script(auth, SERVICE_UID=str(service_uid))
    assert owner()[0] == service_uid and _mode(token_file) == 0o400 and token_file.read_text() == token

    # Removed, there is none until the next start makes a new one.
    removed = _script(auth, "remove", "api-token")
    assert removed.returncode == 0 and not token_file.exists()
    missing = _script(auth, "show", "api-token")
    assert missing.returncode == 1 and missing.stdout == "" and "no API token" in missing.stderr
    assert _script(auth, **ids).returncode == 0
    assert token_file.read_text() != token and owner() == (service_uid, prometheus_gid, 0o440)
    # `show` reads the name as its own, so no login may take it.
    taken = _script(auth, "passwd", "api-token", stdin="a-password\n")
    assert taken.returncode == 1 and "reserved" in taken.stderr
    assert not (auth.dir / "users" / "api-token").exists()


def test_mqtt_auth_makes_grafanas_admin_password_for_grafana_alone(tmp_path: Path) -> None:
    """Before, Grafana's port was on every interface with admin/admin unless someone set a password. Now the
    password is made like the others, for Grafana's uid alone, and Grafana reads it from the volume."""
    grafana = compose()["services"]["grafana"]
    environment = dict(e.split("=", 1) for e in compose()["services"]["mqtt-auth"]["environment"])
    grafana_uid = int(environment["GRAFANA_UID"]) if os.geteuid() == 0 else os.getuid()
    mount = next(target for target, source in volume_targets(grafana).items() if source == "mqtt-auth")
    grafana_env = dict(e.split("=", 1) for e in grafana["environment"])
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == f"{mount}/grafana-admin"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana_env
    assert grafana["depends_on"]["mqtt-auth"] == {"condition": "service_completed_successfully"}

    auth = MqttAuth(tmp_path)
    secret = auth.dir / "grafana-admin"
    first = _script(auth, GRAFANA_UID=str(grafana_uid))
    assert first.returncode == 0, first.stderr
    password = secret.read_text()
    assert re.fullmatch(r"[0-9a-f]{48}\n", password)
    assert password.strip() not in first.stdout + first.stderr and "show grafana-admin" in first.stdout
    assert (secret.stat().st_uid, _mode(secret)) == (grafana_uid, 0o400)
    # The grafana image's group is root's (0): no secret of the volume is readable through it.
    assert _readable_by_group(auth.dir, 0) == {"tls/ca.crt", "tls/server.crt"}

    again = _script(auth, GRAFANA_UID=str(grafana_uid))
    assert again.returncode == 0 and again.stdout == "" and secret.read_text() == password
    assert _script(auth, "show", "grafana-admin").stdout == password
    assert _script(auth, "remove", "grafana-admin").returncode == 0 and not secret.exists()
    assert _script(auth, GRAFANA_UID=str(grafana_uid)).returncode == 0 and secret.read_text() != password
    taken = _script(auth, "passwd", "grafana-admin", stdin="a-password\n")
    assert taken.returncode == 1 and "reserved" in taken.stderr


def test_grafana_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    def ports(env: str) -> set[str]:
        env_file = tmp_path / "env"
        env_file.write_text(env)
        command = [tool("docker-compose"), "--env-file", str(env_file), "--profile", "monitoring", "config"]
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True, timeout=120).stdout
        return {str(p) for p in yaml.safe_load(out)["services"]["grafana"]["ports"]}

    assert ports("") == {"127.0.0.1:3000:3000/tcp"}
    assert ports("FEREDGE_GRAFANA_BIND=0.0.0.0\nFEREDGE_GRAFANA_PORT=3001\n") == {"0.0.0.0:3001:3000/tcp"}


# -- the broker -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shipped_port", [MQTT, MQTT_TLS, WEBSOCKETS])
def test_every_listener_refuses_anonymous_clients_and_wrong_passwords(broker: Broker, shipped_port: int) -> None:
    assert _answer(broker, shipped_port, None) == "Not authorized"
    assert _answer(broker, shipped_port, ("admin", "wrong")) == "Not authorized"
    assert _answer(broker, shipped_port, ("nobody", broker.auth.password("admin"))) == "Not authorized"
    assert _answer(broker, shipped_port, broker.auth.login("dashboard")) == "Success"


def test_tls_is_served_to_those_who_trust_the_ca_only(broker: Broker) -> None:
    listener = broker.listeners[MQTT_TLS]
    assert _answer(broker, MQTT_TLS, broker.auth.login("homeassistant")) == "Success"
    # With the system's CAs (a client never given ours), the handshake fails before any password is sent.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(*broker.auth.login("homeassistant"))
    client.tls_set()
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", listener.port)
    # And the plain listener is not TLS, nor the TLS one plain.
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    plain.username_pw_set(*broker.auth.login("homeassistant"))
    plain.connect("127.0.0.1", listener.port)
    plain.loop_start()
    time.sleep(1.0)
    assert not plain.is_connected()
    _close(plain)


def _reaches(broker: Broker, watcher: Recorder, login: tuple[str, str], topic: str, payload: bytes) -> bool:
    """Whether ``login``'s publish on ``topic`` reaches a subscriber. Over MQTT 3.1.1 a refused one is
    acknowledged all the same, so an admin's marker published after it says when to stop waiting."""
    client, answer = _client(broker, MQTT, login)
    assert answer == "Success"
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    _close(client)
    admin, _ = _client(broker, MQTT, broker.auth.login("admin"))
    marker = f"marker-{time.monotonic_ns()}".encode()
    admin.publish("fer/test/marker", marker, qos=1).wait_for_publish(10)
    _close(admin)
    watcher.wait_for(lambda ms: [m for m in ms if m.payload == marker], what="the marker")
    return any(m.topic == topic and m.payload == payload for m in watcher.snapshot())


def test_only_an_admin_can_switch_a_camera(broker: Broker, recorders: Callable[..., Recorder]) -> None:
    # What the service subscribes to, as the service's own user.
    service = recorders(broker.port(), broker.auth.login("fer"), ("fer/+/analysis/set", "fer/test/marker"))
    for user in ("dashboard", "homeassistant", "fer"):
        assert not _reaches(broker, service, broker.auth.login(user), "fer/lobby/analysis/set", f"OFF {user}".encode())
    assert _reaches(broker, service, broker.auth.login("admin"), "fer/lobby/analysis/set", b"OFF")


def test_readers_cannot_write_and_nobody_but_the_store_announces_models(
    broker: Broker, recorders: Callable[..., Recorder]
) -> None:
    admin = recorders(broker.port(), broker.auth.login("admin"), ("fer/#", "homeassistant/#"))
    assert not _reaches(broker, admin, broker.auth.login("dashboard"), "fer/lobby/events", b"{}")
    assert not _reaches(broker, admin, broker.auth.login("homeassistant"), "fer/lobby/expression", b"{}")
    # A model announcement decides what every gateway downloads: not the service's to send.
    assert not _reaches(broker, admin, broker.auth.login("fer"), "fer/models/ean/stable", b"{}")
    # Home Assistant's birth message makes the service send discovery again.
    assert _reaches(broker, admin, broker.auth.login("homeassistant"), "homeassistant/status", b"online")


def test_a_message_past_the_size_limit_is_dropped_with_its_sender(
    broker: Broker, recorders: Callable[..., Recorder]
) -> None:
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    limit = int(re.search(r"^max_packet_size (\d+)$", conf, re.M).group(1))  # type: ignore[union-attr]
    topic = "fer/lobby/status"
    big, answer = _client(broker, MQTT, broker.auth.login("admin"))
    assert answer == "Success"
    gone: queue.Queue[str] = queue.Queue()
    big.on_disconnect = lambda _c, _u, _f, reason, _p: gone.put(str(reason))
    big.publish(topic, b"x" * limit, qos=0, retain=True)
    assert gone.get(timeout=10), "the broker kept a client that sent a packet past max_packet_size"
    _close(big)
    # What fits passes; a subscriber that comes later finds only that one retained.
    small, _ = _client(broker, MQTT, broker.auth.login("admin"))
    small.publish(topic, b"y" * (limit // 2), qos=1, retain=True).wait_for_publish(10)
    _close(small)
    late = recorders(broker.port(), broker.auth.login("dashboard"), (topic,))
    late.wait_for(lambda ms: [m for m in ms if m.topic == topic], what="the retained message")
    assert [len(m.payload) for m in late.snapshot() if m.topic == topic] == [limit // 2]


def test_a_dashboard_on_websockets_sees_what_the_service_publishes_over_tcp(
    broker: Broker, recorders: Callable[..., Recorder]
) -> None:
    dashboard, answer = _client(broker, WEBSOCKETS, broker.auth.login("dashboard"))
    service, answer2 = _client(broker, MQTT, broker.auth.login("fer"))
    try:
        assert answer == answer2 == "Success"
        received: queue.Queue[bytes] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        dashboard.on_message = lambda _c, _u, msg: received.put(msg.payload)
        dashboard.on_subscribe = lambda *_: subscribed.put(True)
        dashboard.subscribe("fer/+/events", qos=1)
        subscribed.get(timeout=10)
        service.publish("fer/cam0/events", b'{"type": "new"}', qos=1).wait_for_publish(timeout=10)
        assert received.get(timeout=10) == b'{"type": "new"}'
    finally:
        _close(dashboard, service)


def test_the_service_user_publishes_everything_a_fleet_gateway_sends(
    tmp_path: Path, broker: Broker, recorders: Callable[..., Recorder]
) -> None:
    """The service's own publisher, logged in as compose logs it in (its password file), in a fleet: every
    topic it writes reaches a dashboard, discovery reaches Home Assistant, and a switch reaches it."""
    cfg = MqttConfig.model_validate({
        "port": broker.port(), "username": "fer", "password_file": str(broker.auth.dir / "users" / "fer"),
        "reconnect_min_s": 1, "reconnect_max_s": 1})  # fmt: skip
    metrics = Metrics(CollectorRegistry(), ["lobby"])
    gateway = MqttPublisher(cfg, Outbox(tmp_path / "outbox.sqlite3", 100, metrics), metrics, [("lobby", "Lobby")],
                            "gw1")  # fmt: skip
    gateway.set_labels(["happy", "sad"])
    commands: list[bytes] = []
    gateway.subscribe("fer/+/analysis/set", lambda _t, payload: commands.append(payload))
    dashboard = recorders(broker.port(), broker.auth.login("dashboard"), ("fer/#",))
    home_assistant = recorders(broker.port(MQTT_TLS), broker.auth.login("homeassistant"), ("homeassistant/#",),
                               ca=broker.auth.ca)  # fmt: skip
    gateway.start()
    try:
        wait_until(lambda: gateway.connected, 10, what="the service logged in")
        gateway.publish_event(ExpressionChange(id="e1", camera="lobby", track_id=1, label="happy",
                                               previous_label=None, score=0.9, timestamp=time.time(),
                                               model_version=1))  # fmt: skip
        gateway.set_model_state(GatewayModel(name="ean", version=1, sha256="0" * 64, state="serving",
                                             timestamp=time.time()))  # fmt: skip
        wanted = {"fer/gateways/gw1/available", "fer/gateways/gw1/cameras", "fer/gateways/gw1/model",
                  "fer/lobby/events"}  # fmt: skip
        dashboard.wait_for(lambda ms: wanted <= {m.topic for m in ms}, what=f"{sorted(wanted)} at the dashboard")
        home_assistant.wait_for(lambda ms: [m for m in ms if m.topic == "homeassistant/device/fer_edge_gw1/config"],
                                what="discovery at Home Assistant")  # fmt: skip
        admin, _ = _client(broker, MQTT, broker.auth.login("admin"))
        admin.publish("fer/lobby/analysis/set", b"OFF", qos=1).wait_for_publish(10)
        _close(admin)
        wait_until(lambda: commands == [b"OFF"], 10, what="the admin's switch at the service")
    finally:
        gateway.stop()
